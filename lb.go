package smartproxy

import "errors"

// loadBalancer is a route's compiled load-balancing state.
// (Placeholder until load balancing lands.)
type loadBalancer struct{}

// compileLB validates action.loadBalancing. (Placeholder until load
// balancing lands: refuses the block rather than ignoring it.)
func (v *routeValidator) compileLB(a *RouteAction) *loadBalancer {
	if a.LoadBalancing != nil {
		v.fail("action.loadBalancing", errors.New("not supported yet"))
	}
	return nil
}
