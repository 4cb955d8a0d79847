package schema

import "time"

// Seconds is a duration that configuration files give as a whole number
// of seconds, for the fields the TS schema gives in seconds (an HTTP rate
// limit's window, a JWT's clock-skew leeway). Fields in milliseconds use
// smartproxy.Millis; naming the unit in the type keeps a field's Go
// declaration and its JSON meaning in step.
type Seconds int

// Duration converts to a time.Duration.
func (s Seconds) Duration() time.Duration { return time.Duration(s) * time.Second }
