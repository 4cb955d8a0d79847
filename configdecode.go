package smartproxy

import (
	"encoding"
	"encoding/json"
	"fmt"
	"maps"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// A config document is decoded in two steps: the JSON or YAML text into a
// generic value (objects as map[string]any, lists as []any, numbers as
// json.Number or YAML's numbers), then that value into Config by a walk
// that follows the struct types and their json tags. The walk reports
// every mistake it meets, each with its JSON path and, for YAML, the line
// and column, in words rather than Go type names; encoding/json would stop
// at the first and name Go types.

// ConfigError is one mistake in a config document.
type ConfigError struct {
	// File is the config file, when the document was read by LoadConfig.
	File string
	// Path is the JSON path of the offending value, such as
	// "routes[2].action.targets[0].port"; "" for the document itself.
	Path string
	// Route is the name of the route Path is in, if it has one: messages
	// write it after the index, as in `routes[2] ("web").match`, so that
	// routes are found by name and told apart by index.
	Route string
	// Line and Column locate the value in a YAML document (1-based); 0
	// when unknown, as in JSON.
	Line, Column int
	// Err says what is wrong.
	Err error
}

// Error writes "file: line L col C: path: mistake", leaving out what is
// not known.
func (e *ConfigError) Error() string {
	var b strings.Builder
	if e.File != "" {
		b.WriteString(e.File + ": ")
	}
	if e.Line > 0 {
		fmt.Fprintf(&b, "line %d col %d: ", e.Line, e.Column)
	}
	if p := e.displayPath(); p != "" {
		b.WriteString(p + ": ")
	}
	b.WriteString(e.Err.Error())
	return b.String()
}

// displayPath is Path with the route's name after its index.
func (e *ConfigError) displayPath() string {
	if e.Route == "" || !strings.HasPrefix(e.Path, "routes[") {
		return e.Path
	}
	end := strings.IndexByte(e.Path, ']') + 1
	return e.Path[:end] + fmt.Sprintf(" (%q)", e.Route) + e.Path[end:]
}

// Unwrap returns the mistake.
func (e *ConfigError) Unwrap() error { return e.Err }

// ConfigErrors is every mistake found in a config document, in document
// order where the positions are known. ParseConfig and LoadConfig return
// it; errors.As finds it.
type ConfigErrors []*ConfigError

// Error writes one mistake a line.
func (es ConfigErrors) Error() string {
	msgs := make([]string, len(es))
	for i, e := range es {
		msgs[i] = e.Error()
	}
	return strings.Join(msgs, "\n")
}

// Unwrap returns the mistakes, for errors.Is and errors.As.
func (es ConfigErrors) Unwrap() []error {
	out := make([]error, len(es))
	for i, e := range es {
		out[i] = e
	}
	return out
}

// docPos is where a value starts in a YAML document.
type docPos struct{ line, col int }

// configDecoder decodes a generic document into Go values, collecting
// every mistake.
type configDecoder struct {
	pos    map[string]docPos // JSON path → position of its value (YAML only)
	keyPos map[string]docPos // JSON path → position of its key (YAML only)
	names  map[int]string    // route index → name
	errs   ConfigErrors
}

// fail records a mistake at path, located by the value's position.
func (d *configDecoder) fail(path string, err error) { d.failAt(path, d.pos[path], err) }

func (d *configDecoder) failf(path, format string, args ...any) {
	d.fail(path, fmt.Errorf(format, args...))
}

func (d *configDecoder) failAt(path string, p docPos, err error) {
	e := &ConfigError{Path: path, Line: p.line, Column: p.col, Err: err}
	if i, ok := routeIndex(path); ok {
		e.Route = d.names[i]
	}
	d.errs = append(d.errs, e)
}

// routeIndex returns N of a path starting "routes[N]".
func routeIndex(path string) (int, bool) {
	rest, ok := strings.CutPrefix(path, "routes[")
	if !ok {
		return 0, false
	}
	n, _, ok := strings.Cut(rest, "]")
	if !ok {
		return 0, false
	}
	i, err := strconv.Atoi(n)
	return i, err == nil
}

// sorted returns the mistakes in document order when positions are
// known (mistakes without one keep their order, first).
func (d *configDecoder) sorted() ConfigErrors {
	slices.SortStableFunc(d.errs, func(a, b *ConfigError) int {
		if a.Line != b.Line {
			return a.Line - b.Line
		}
		return a.Column - b.Column
	})
	return d.errs
}

var (
	actionTypeType      = reflect.TypeFor[ActionType]()
	certificateSpecType = reflect.TypeFor[CertificateSpec]()
	stringListType      = reflect.TypeFor[StringList]()
	jsonUnmarshalerType = reflect.TypeFor[json.Unmarshaler]()
	textUnmarshalerType = reflect.TypeFor[encoding.TextUnmarshaler]()
)

// value decodes doc into v, whose JSON path is path.
func (d *configDecoder) value(doc any, v reflect.Value, path string) {
	t := v.Type()
	if t.Kind() == reflect.Pointer {
		if doc == nil {
			return // null leaves the field unset, as in encoding/json
		}
		p := reflect.New(t.Elem())
		before := len(d.errs)
		d.value(doc, p.Elem(), path)
		if len(d.errs) == before {
			// A value that did not decode stays unset, so that the checks
			// after decoding do not report it a second time as zero.
			v.Set(p)
		}
		return
	}
	if doc == nil {
		return
	}
	switch t {
	case millisType:
		lit, ok := numberLiteral(doc)
		if !ok {
			d.failf(path, "want milliseconds as a number, got %s", describe(doc))
			return
		}
		m, err := parseMillis(lit)
		if err != nil {
			d.fail(path, err)
			return
		}
		v.SetInt(int64(m))
		return
	case portSpecType:
		d.portSpec(doc, v, path)
		return
	case targetPortType:
		if s, ok := doc.(string); ok {
			if strings.EqualFold(s, "preserve") {
				v.SetInt(int64(PreservePort))
			} else {
				d.failf(path, "port must be a number or \"preserve\", got %q", s)
			}
			return
		}
		if _, ok := numberLiteral(doc); !ok {
			d.failf(path, "port must be a number or \"preserve\", got %s", describe(doc))
			return
		}
		d.integer(doc, v, path)
		return
	case certificateSpecType:
		if s, ok := doc.(string); ok {
			if s == "auto" {
				v.Set(reflect.ValueOf(CertificateSpec{Auto: true}))
			} else {
				d.failf(path, "certificate must be \"auto\" or an object, got %q", s)
			}
			return
		}
		if _, ok := doc.(map[string]any); !ok {
			d.failf(path, "certificate must be \"auto\" or an object, got %s", describe(doc))
			return
		}
		d.object(doc, v, path) // Auto has no JSON name
		return
	case stringListType:
		if s, ok := doc.(string); ok {
			v.Set(reflect.ValueOf(StringList{s}))
			return
		}
		if _, ok := doc.([]any); !ok {
			d.failf(path, "want a string or a list of strings, got %s", describe(doc))
			return
		}
	case actionTypeType:
		if doc == "redirect" {
			d.fail(path, fmt.Errorf("TS value \"redirect\", not supported (write the redirect in action.redirect: {to, status} on a forward route)"))
			return
		}
	}
	if t != stringListType && reflect.PointerTo(t).Implements(jsonUnmarshalerType) {
		// A type of another package with its own JSON form.
		raw, err := json.Marshal(doc)
		if err == nil {
			err = v.Addr().Interface().(json.Unmarshaler).UnmarshalJSON(raw)
		}
		if err != nil {
			d.fail(path, err)
		}
		return
	}
	if reflect.PointerTo(t).Implements(textUnmarshalerType) {
		s, ok := doc.(string)
		if !ok {
			d.failf(path, "want a string, got %s", describe(doc))
			return
		}
		if err := v.Addr().Interface().(encoding.TextUnmarshaler).UnmarshalText([]byte(s)); err != nil {
			d.fail(path, err)
		}
		return
	}
	switch t.Kind() {
	case reflect.String:
		s, ok := doc.(string)
		if !ok {
			d.failf(path, "want a string, got %s", describe(doc))
			return
		}
		v.SetString(s)
	case reflect.Bool:
		b, ok := doc.(bool)
		if !ok {
			d.failf(path, "want true or false, got %s", describe(doc))
			return
		}
		v.SetBool(b)
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		d.integer(doc, v, path)
	case reflect.Float32, reflect.Float64:
		lit, ok := numberLiteral(doc)
		if !ok {
			d.failf(path, "want a number, got %s", describe(doc))
			return
		}
		f, err := checkFloat(lit, t.Bits())
		if err != nil {
			d.fail(path, err)
			return
		}
		v.SetFloat(f)
	case reflect.Struct:
		if _, ok := doc.(map[string]any); !ok {
			d.failf(path, "want an object, got %s", describe(doc))
			return
		}
		d.object(doc, v, path)
	case reflect.Slice:
		list, ok := doc.([]any)
		if !ok {
			d.failf(path, "want a list, got %s", describe(doc))
			return
		}
		s := reflect.MakeSlice(t, len(list), len(list))
		for i, item := range list {
			d.value(item, s.Index(i), fmt.Sprintf("%s[%d]", path, i))
		}
		v.Set(s)
	case reflect.Map:
		m, ok := doc.(map[string]any)
		if !ok || t.Key().Kind() != reflect.String {
			d.failf(path, "want an object, got %s", describe(doc))
			return
		}
		out := reflect.MakeMapWithSize(t, len(m))
		for _, key := range slices.Sorted(maps.Keys(m)) {
			e := reflect.New(t.Elem()).Elem()
			d.value(m[key], e, joinPath(path, key))
			out.SetMapIndex(reflect.ValueOf(key).Convert(t.Key()), e)
		}
		v.Set(out)
	default:
		d.failf(path, "cannot be set in a config file")
	}
}

// integer sets v, an integer kind, from a whole number that fits it.
func (d *configDecoder) integer(doc any, v reflect.Value, path string) {
	lit, ok := numberLiteral(doc)
	if !ok {
		d.failf(path, "want a whole number, got %s", describe(doc))
		return
	}
	signed := v.Kind() >= reflect.Int && v.Kind() <= reflect.Int64
	n, err := checkInteger(lit, v.Type().Bits(), signed)
	if err != nil {
		d.fail(path, err)
		return
	}
	if signed {
		v.SetInt(n)
	} else {
		v.SetUint(uint64(n))
	}
}

// object decodes the fields of a JSON object into the struct v. Fields
// the struct does not have are refused: as fields of the TS schema this
// library does not implement (saying why), as fields that arrive later,
// or as unknown, with the nearest known name.
func (d *configDecoder) object(doc any, v reflect.Value, path string) {
	m := doc.(map[string]any)
	t := v.Type()
	for _, key := range slices.Sorted(maps.Keys(m)) {
		f, ok := fieldByJSONName(t, key)
		if !ok {
			d.unknownField(t, key, path)
			continue
		}
		fv, err := v.FieldByIndexErr(f.Index)
		if err != nil {
			d.failf(joinPath(path, key), "cannot be set in a config file")
			continue
		}
		d.value(m[key], fv, joinPath(path, key))
	}
}

// unknownField reports key, a field struct t does not have.
func (d *configDecoder) unknownField(t reflect.Type, key, path string) {
	at := joinPath(path, key)
	level := levelOf[t]
	if why, ok := tsFields[level][key]; ok {
		d.failAt(at, d.keyPos[at], fmt.Errorf("TS field, not supported (%s)", why))
		return
	}
	if what, ok := laterFields[level][key]; ok {
		d.failAt(at, d.keyPos[at], fmt.Errorf("not supported yet (arrives with %s)", what))
		return
	}
	msg := fmt.Sprintf("unknown field %q", key)
	if near := nearestName(t, key); near != "" {
		msg += fmt.Sprintf(" (did you mean %s?)", near)
	}
	d.failAt(path, d.keyPos[at], fmt.Errorf("%s", msg))
}

// portSpec decodes a port, a {from, to} range or a list of both.
func (d *configDecoder) portSpec(doc any, v reflect.Value, path string) {
	list, isList := doc.([]any)
	if !isList {
		list = []any{doc}
	}
	spec := make(PortSpec, 0, len(list))
	for i, item := range list {
		at := path
		if isList {
			at = fmt.Sprintf("%s[%d]", path, i)
		}
		if r, ok := d.portItem(item, at); ok {
			spec = append(spec, r)
		}
	}
	v.Set(reflect.ValueOf(spec))
}

func (d *configDecoder) portItem(doc any, path string) (PortRange, bool) {
	m, ok := doc.(map[string]any)
	if !ok {
		if _, ok := numberLiteral(doc); !ok {
			d.failf(path, "port must be an integer or {from,to}, got %s", describe(doc))
			return PortRange{}, false
		}
		var p int
		before := len(d.errs)
		d.integer(doc, reflect.ValueOf(&p).Elem(), path)
		return PortRange{From: p, To: p}, len(d.errs) == before
	}
	var r struct {
		From *int `json:"from"`
		To   *int `json:"to"`
	}
	before := len(d.errs)
	d.object(m, reflect.ValueOf(&r).Elem(), path)
	if len(d.errs) > before {
		return PortRange{}, false
	}
	if r.From == nil || r.To == nil {
		d.failf(path, "port range needs both \"from\" and \"to\"")
		return PortRange{}, false
	}
	return PortRange{From: *r.From, To: *r.To}, true
}

// describe says what a generic value is, for "want X, got Y".
func describe(doc any) string {
	switch v := doc.(type) {
	case nil:
		return "null"
	case string:
		return fmt.Sprintf("a string %q", v)
	case bool:
		return strconv.FormatBool(v)
	case map[string]any:
		return "an object"
	case []any:
		return "a list"
	}
	if lit, ok := numberLiteral(doc); ok {
		return "the number " + lit
	}
	return fmt.Sprintf("%v", doc)
}

// nearestName returns the JSON name of t closest to key, quoted, when it
// is close enough to be a likely typo; "" otherwise.
func nearestName(t reflect.Type, key string) string {
	best, bestDist := "", 0
	limit := min(3, max(1, len(key)/3))
	for _, f := range reflect.VisibleFields(t) {
		name, ok := jsonName(f)
		if !ok {
			continue
		}
		if dist := editDistance(strings.ToLower(key), strings.ToLower(name)); dist <= limit && (best == "" || dist < bestDist) {
			best, bestDist = name, dist
		}
	}
	if best == "" {
		return ""
	}
	return strconv.Quote(best)
}

// editDistance is the Damerau-Levenshtein distance (optimal string
// alignment) of a and b, in bytes: a swap of two neighbours counts one.
func editDistance(a, b string) int {
	pp, prev, cur := make([]int, len(b)+1), make([]int, len(b)+1), make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
			if i > 1 && j > 1 && a[i-1] == b[j-2] && a[i-2] == b[j-1] {
				cur[j] = min(cur[j], pp[j-2]+1)
			}
		}
		pp, prev, cur = prev, cur, pp
	}
	return prev[len(b)]
}

// maxAliasExpansion bounds the values that YAML aliases may add to a
// document, against "billion laughs" documents that expand a few lines
// into more than memory holds.
const maxAliasExpansion = 200_000

// yamlReader turns a yaml.Node tree into a generic value, recording each
// value's position by JSON path.
type yamlReader struct {
	pos, keyPos map[string]docPos
	inAlias     int
	expanded    int
	errs        []*ConfigError
}

func (y *yamlReader) fail(path string, n *yaml.Node, format string, args ...any) {
	y.errs = append(y.errs, &ConfigError{Path: path, Line: n.Line, Column: n.Column, Err: fmt.Errorf(format, args...)})
}

// node converts n, found at path.
func (y *yamlReader) node(n *yaml.Node, path string) any {
	if y.inAlias > 0 {
		y.expanded++
		if y.expanded > maxAliasExpansion {
			return nil
		}
	}
	if _, seen := y.pos[path]; !seen {
		y.pos[path] = docPos{n.Line, n.Column}
	}
	switch n.Kind {
	case yaml.DocumentNode:
		if len(n.Content) == 0 {
			return nil
		}
		return y.node(n.Content[0], path)
	case yaml.AliasNode:
		y.inAlias++
		defer func() { y.inAlias-- }()
		return y.node(n.Alias, path)
	case yaml.ScalarNode:
		if n.ShortTag() == "!!str" {
			return n.Value // the common case, without a decoder
		}
		var v any
		if err := n.Decode(&v); err != nil {
			y.fail(path, n, "%v", err)
			return nil
		}
		if _, ok := v.(time.Time); ok {
			return n.Value // a date is text to this schema
		}
		return v
	case yaml.SequenceNode:
		list := make([]any, len(n.Content))
		for i, c := range n.Content {
			list[i] = y.node(c, fmt.Sprintf("%s[%d]", path, i))
		}
		return list
	case yaml.MappingNode:
		m := make(map[string]any, len(n.Content)/2)
		keyAt := make(map[string]*yaml.Node, len(n.Content)/2)
		var merges []*yaml.Node
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := resolveAlias(n.Content[i]), n.Content[i+1]
			if k.Kind != yaml.ScalarNode {
				y.fail(path, k, "a key must be a plain value, not a list or object")
				continue
			}
			if k.Tag == "!!merge" {
				merges = append(merges, v)
				continue
			}
			if prev, dup := keyAt[k.Value]; dup {
				y.fail(joinPath(path, k.Value), k, "key %q already given at line %d", k.Value, prev.Line)
				continue
			}
			keyAt[k.Value] = k
			at := joinPath(path, k.Value)
			y.keyPos[at] = docPos{k.Line, k.Column}
			m[k.Value] = y.node(v, at)
		}
		// "<<: *base" merges base's keys that the mapping does not give
		// itself; with a list, earlier mappings win.
		for _, mn := range merges {
			src := resolveAlias(mn)
			sources := []*yaml.Node{mn}
			if src.Kind == yaml.SequenceNode {
				sources = src.Content
			}
			for _, s := range sources {
				merged, ok := y.node(s, path).(map[string]any)
				if !ok {
					y.fail(path, s, "a merge (<<) takes a mapping or a list of mappings")
					continue
				}
				for k, v := range merged {
					if _, have := m[k]; !have {
						m[k] = v
					}
				}
			}
		}
		return m
	}
	y.fail(path, n, "unexpected YAML node")
	return nil
}

func resolveAlias(n *yaml.Node) *yaml.Node {
	for n.Kind == yaml.AliasNode && n.Alias != nil {
		n = n.Alias
	}
	return n
}
