package admin

import (
	"embed"
	"net/http"
	"path"
)

// static holds the dashboard: one page, its script and its style, plain
// files with no build step.
//
//go:embed static
var static embed.FS

// contentTypes of the dashboard's files.
var contentTypes = map[string]string{
	".html": "text/html; charset=utf-8",
	".js":   "text/javascript; charset=utf-8",
	".css":  "text/css; charset=utf-8",
}

// serveStatic serves one embedded file. The page is open even with a
// token (it holds no data: it asks for the token and sends it with its
// requests); its policy lets it load only its own files and talk only to
// this server.
func serveStatic(name string) http.HandlerFunc {
	body, err := static.ReadFile("static/" + name)
	if err != nil {
		panic("admin: missing embedded file " + name) // a build mistake
	}
	ctype := contentTypes[path.Ext(name)]
	return func(w http.ResponseWriter, _ *http.Request) {
		h := w.Header()
		h.Set("Content-Type", ctype)
		h.Set("Content-Security-Policy", "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self'")
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("X-Frame-Options", "DENY")
		h.Set("Referrer-Policy", "no-referrer")
		h.Set("Cache-Control", "no-cache")
		_, _ = w.Write(body)
	}
}
