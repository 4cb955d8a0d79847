module github.com/gosmartproxy/smartproxy/bench/h1cmp

go 1.26.0

require (
	github.com/gosmartproxy/smartproxy v0.0.0
	github.com/valyala/fasthttp v1.79.0
)

require (
	github.com/gobwas/glob v1.1.0 // indirect
	github.com/golang-jwt/jwt/v5 v5.3.1 // indirect
	github.com/klauspost/compress v1.20.4 // indirect
	github.com/molecule-man/go-brrr v1.3.1 // indirect
	github.com/valyala/bytebufferpool v1.0.0 // indirect
	go.yaml.in/yaml/v3 v3.0.5 // indirect
	golang.org/x/crypto v0.59.0 // indirect
	golang.org/x/net v0.62.0 // indirect
	golang.org/x/sys v0.50.0 // indirect
	golang.org/x/text v0.44.0 // indirect
)

replace github.com/gosmartproxy/smartproxy => ../..
