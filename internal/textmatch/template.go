package textmatch

import "strings"

// Expand replaces {name} placeholders with lookup(name). A name is
// one or more of the characters [a-zA-Z0-9_.-]: '.' for dotted names such
// as "headers.x-forwarded-for", and '-' because header names use it.
// Unknown names, and braces that do not form a placeholder ("{}", "{a b}",
// a '{' without its '}'), stay as written, so a literal brace needs no
// escaping; "{{x}" keeps the first brace and expands "{x}". Values are not
// expanded again, so a value that contains braces (such as a client's
// request path) cannot inject placeholders.
//
// It runs in time linear in len(tmpl): a '{' only scans the name
// characters after it, and the next '{' ends that scan.
func Expand(tmpl string, lookup func(name string) (string, bool)) string {
	open := strings.IndexByte(tmpl, '{')
	if open < 0 {
		return tmpl
	}
	var b strings.Builder
	b.Grow(len(tmpl) + 32)
	for open >= 0 {
		b.WriteString(tmpl[:open])
		end := open + 1
		for end < len(tmpl) && isNameByte(tmpl[end]) {
			end++
		}
		if end > open+1 && end < len(tmpl) && tmpl[end] == '}' {
			if v, ok := lookup(tmpl[open+1 : end]); ok {
				b.WriteString(v)
				tmpl = tmpl[end+1:]
				open = strings.IndexByte(tmpl, '{')
				continue
			}
		}
		// Not a placeholder: keep the '{' and go on after it.
		b.WriteByte('{')
		tmpl = tmpl[open+1:]
		open = strings.IndexByte(tmpl, '{')
	}
	b.WriteString(tmpl)
	return b.String()
}

func isNameByte(c byte) bool {
	return c == '_' || c == '.' || c == '-' ||
		c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z'
}
