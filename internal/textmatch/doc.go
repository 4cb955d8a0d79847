// Package textmatch holds the two small text languages of route configs:
// path patterns (match.path, targets[].match.path) and {name} templates
// (action.headers, rewrite, redirect, HTTPRedirectHandler).
//
// Both are plain string functions: they know nothing of HTTP requests,
// routes or the proxy. The caller decides which path a pattern sees (the
// proxy passes the cleaned request path) and what each template name
// means (see the root package's template docs for {domain}, {path} and
// the others).
//
// # Path patterns
//
// A pattern is '/'-separated segments, each a literal, a ":name" capture
// of one segment, or a glob ("*.png") within one segment:
//
//	/api/users        /api/users and /api/users/ (a trailing slash on the path is ignored)
//	/api/*            /api, /api/, /api/v1/users; remainder "v1/users"
//	/api/             the same as /api/*: a pattern ending in '/' is a prefix (as in TS)
//	/                 every path (a prefix, like /*)
//	/users/:id        /users/42, capturing id=42
//	/img/*.png        /img/a.png, not /img/a/b.png (a glob stays in its segment)
//	/api/:id/*        /api/42/posts/7, capturing id=42, remainder "posts/7"
//
// # Templates
//
// Expand replaces {name} placeholders, name being one or more of
// [a-zA-Z0-9_.-]; names the lookup does not know, and braces that form no
// placeholder, stay as written, so literal braces need no escaping.
// Values are never expanded again.
package textmatch
