package smartproxy

import "errors"

// compileLB validates action.loadBalancing. (Placeholder until load
// balancing lands: refuses the block rather than ignoring it.)
func (v *routeValidator) compileLB(a *RouteAction) {
	if a.LoadBalancing != nil {
		v.fail("action.loadBalancing", errors.New("not supported yet"))
	}
}
