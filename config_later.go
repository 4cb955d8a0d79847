package smartproxy

import "reflect"

// Fields of the TS schema that this version does not implement yet, by
// where they appear, and the capability that will bring them. Refusing
// them beats ignoring them: a user who configured basicAuth must not get
// an open route.
var laterFields = map[string]map[string]string{
	"security": {
		"authentication": "a later version; use basicAuth or jwtAuth",
	},
}

// Fields of the TS schema that this library does not implement and has
// no plan to, by where they appear, with why and what to use instead.
var tsFields = map[string]map[string]string{
	"": {
		"useHttpProxy":          "this library proxies HTTP itself: routes with domains, path or headers on the same ports",
		"httpProxyPort":         "this library proxies HTTP itself: put the HTTP routes on their ports with match.ports",
		"metrics":               "Prometheus metrics are served by the admin API (our extension): admin: {listen: 127.0.0.1:9900}, or Proxy.Collector from Go code",
		"globalPortRanges":      "list the ports in each route's match.ports",
		"advanced":              "the TS-only tuning block; use the top-level timeouts and limits",
		"certProvisionFunction": "a config file cannot hold code: set Options.Certificates in Go",
	},
	"action": {
		"target":        "renamed to `targets` in TS v20: write targets: [{host, port}]",
		"socketHandler": "socket handlers are Go functions: set Route.Action.SocketHandler in code",
		"advanced":      "the TS-only tuning block; use action.options, action.headers and the top-level timeouts",
	},
	"nftables": {
		"tableName":      "one table per proxy: set Options.NftablesTable in Go",
		"priority":       "routes of the nftables engine never share a port, so their order does not matter",
		"useIPSets":      "ipAllowList and ipBlockList always become nft sets",
		"useAdvancedNAT": "DNAT and masquerade are always used; set preserveSourceIP to keep client addresses",
	},
}

// levelOf names the place of a struct type in the schema, the key of
// laterFields and tsFields.
var levelOf = map[reflect.Type]string{
	reflect.TypeFor[Config]():          "",
	reflect.TypeFor[Defaults]():        "defaults",
	reflect.TypeFor[RouteMatch]():      "match",
	reflect.TypeFor[RouteAction]():     "action",
	reflect.TypeFor[RouteTLS]():        "tls",
	reflect.TypeFor[RouteSecurity]():   "security",
	reflect.TypeFor[Target]():          "target",
	reflect.TypeFor[NfTablesOptions](): "nftables",
}
