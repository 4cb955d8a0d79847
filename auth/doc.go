// Package auth implements the HTTP-level security of a smartproxy route:
// HTTP Basic authentication ([BasicAuth]), JSON Web Tokens verified with a
// secret, a public key or a JSON Web Key Set ([JWTAuth]), and a per-key
// sliding-window request rate limit ([RateLimit]).
//
// The schema types carry the JSON tags of a route's "security" block, so
// a configuration decodes into them directly. [Compile] validates a
// [Config] and returns a [Checker]; [Checker.Check] applies it to one
// request, writing the 401 or 429 itself on refusal and returning an
// [*Error] whose [Reason] says why, for metrics and logs.
//
// The package knows nothing of listeners, routing or the proxy: the
// caller says who the client is (the address it learnt, which may come
// from a trusted load balancer) and what time it is.
package auth
