package schema

import (
	"fmt"
	"strings"
)

// FieldError is a mistake in one field of a configuration. Field is the
// field's path, such as "security.jwtAuth.algorithm[0]"; whoever reports
// it may add the route or file it belongs to.
type FieldError struct {
	// Field is the path of the offending field.
	Field string
	// Err says what is wrong with it.
	Err error
}

// Error names the field and the mistake.
func (e *FieldError) Error() string { return e.Field + ": " + e.Err.Error() }

// Unwrap returns the mistake.
func (e *FieldError) Unwrap() error { return e.Err }

// FieldErrors is every mistake a validation found, in the order found.
type FieldErrors []*FieldError

// Error lists the mistakes, separated by "; ".
func (fe FieldErrors) Error() string {
	msgs := make([]string, len(fe))
	for i, e := range fe {
		msgs[i] = e.Error()
	}
	return strings.Join(msgs, "; ")
}

// Unwrap returns the mistakes, for errors.Is and errors.As.
func (fe FieldErrors) Unwrap() []error {
	errs := make([]error, len(fe))
	for i, e := range fe {
		errs[i] = e
	}
	return errs
}

// Collector gathers FieldErrors while a configuration is validated, so
// that every mistake is reported rather than the first. It is the one
// collector of smartproxy's validation: the root package labels what it
// gathers with the route (RouteError), package auth returns it as is. The
// zero value is ready to use.
type Collector struct {
	// Prefix is put before every field path given to Fail, e.g.
	// "security." for a part validated on its own.
	Prefix string
	errs   FieldErrors
}

// Fail records err against field (Prefix added).
func (c *Collector) Fail(field string, err error) {
	c.errs = append(c.errs, &FieldError{Field: c.Prefix + field, Err: err})
}

// Failf records a formatted mistake against field (Prefix added).
func (c *Collector) Failf(field, format string, args ...any) {
	c.Fail(field, fmt.Errorf(format, args...))
}

// Add records mistakes gathered elsewhere, such as by a part validated
// on its own, adding Prefix to their paths.
func (c *Collector) Add(errs FieldErrors) {
	for _, e := range errs {
		c.Fail(e.Field, e.Err)
	}
}

// Errors returns the mistakes recorded so far, nil when none.
func (c *Collector) Errors() FieldErrors { return c.errs }

// Err returns the mistakes as one error, or nil when there are none.
func (c *Collector) Err() error {
	if len(c.errs) == 0 {
		return nil
	}
	return c.errs
}
