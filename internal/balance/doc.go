// Package balance chooses backend addresses for a proxy and keeps their
// health. It is the proxy's load balancer without the proxy: it knows
// hosts, ports and addresses ("host:port"), never routes or connections,
// so it imports nothing of the root package.
//
// # Selection
//
// A [Selector] is one load-balancing policy, one small type each:
// [RoundRobin], [LeastConnections], [IPHash] (rendezvous hashing),
// [PowerOfTwoChoices] (random) and [First]. The caller describes the hosts
// of one connection or request in a [Pool] on its stack and passes it to
// [Pick], which skips hosts already tried by that connection and hosts the
// [Health] registry has taken out, and allocates nothing when the pool's
// addresses were precomputed ([JoinAll]).
//
// # Health
//
// A [Health] registry holds, per address and shared by every route of a
// proxy, the state selection reads:
//
//   - passive health: a failed connect ([Health.Failed]) takes the address
//     out for a backoff that doubles per consecutive failure from 1 s to
//     30 s; a successful one ([Health.Succeeded]) ends it;
//   - the connections and requests in flight ([Health.Acquire], released
//     through a [Lease]), which LeastConnections and PowerOfTwoChoices
//     balance on;
//   - active health: checkers ([Health.Sync], [Health.Stop]) that probe an
//     address with a TCP connect or an HTTP GET at an interval and take it
//     out after a number of consecutive failures, back in after a number of
//     consecutive successes.
//
// [Health.Status] reports all of it.
package balance
