package smartproxy

import "strings"

// expandTemplate replaces {name} placeholders, name matching
// [a-zA-Z0-9_.]+, with lookup(name). Unknown names, and braces that do not
// form a placeholder, stay as written, so a literal "{" in a template
// needs no escaping.
func expandTemplate(tmpl string, lookup func(name string) (string, bool)) string {
	if strings.IndexByte(tmpl, '{') < 0 {
		return tmpl
	}
	var b strings.Builder
	b.Grow(len(tmpl) + 32)
	for {
		open := strings.IndexByte(tmpl, '{')
		if open < 0 {
			break
		}
		end := strings.IndexByte(tmpl[open+1:], '}')
		if end < 0 {
			break
		}
		name := tmpl[open+1 : open+1+end]
		b.WriteString(tmpl[:open])
		if v, ok := lookupVar(name, lookup); ok {
			b.WriteString(v)
			tmpl = tmpl[open+end+2:]
			continue
		}
		// Not a placeholder: keep "{" and rescan after it, so "{{x}" still
		// expands the inner "{x}".
		b.WriteByte('{')
		tmpl = tmpl[open+1:]
	}
	b.WriteString(tmpl)
	return b.String()
}

func lookupVar(name string, lookup func(string) (string, bool)) (string, bool) {
	if name == "" {
		return "", false
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if !(c == '_' || c == '.' || c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z') {
			return "", false
		}
	}
	return lookup(name)
}
