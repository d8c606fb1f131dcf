package main

// Loading: viper holds the layers (defaults, the file, RUNNER_* variables,
// flags) and decodes each key with a strict hook (no weak typing: a bare
// 30 is not 30ns, "yes" is not true). What viper cannot do is done here:
// a decoder registry that reads files case-sensitively with clean
// one-line messages and collects unknown keys with a "did you mean" hint
// (viper lowercases keys and accepts any), the environment taken from a
// slice (viper reads only os.Getenv) with unknown RUNNER_<SECTION>_*
// variables refused, and a record of where each value came from.

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/go-viper/mapstructure/v2"
	toml "github.com/pelletier/go-toml/v2"
	"github.com/spf13/viper"
	"go.yaml.in/yaml/v3"
)

// ErrConfig matches, with errors.Is, every error loadConfig returns.
var ErrConfig = errors.New("config: invalid configuration")

// ConfigError is one configuration problem. Its message is one line and
// never holds the value of a secret (redis.password, redis.sentinel.password,
// task.env values).
type ConfigError struct {
	// Field is the dotted key at fault ("worker.lease_ttl"), or "" when the
	// problem is a whole file or an unknown key or variable (named in Msg).
	Field string
	// Msg says what is wrong and, where it helps, what is wanted.
	Msg string
}

// Error returns "config: <field>: <msg>", or "config: <msg>" without a
// field.
func (e *ConfigError) Error() string {
	if e.Field == "" {
		return "config: " + e.Msg
	}
	return "config: " + e.Field + ": " + e.Msg
}

// Is makes errors.Is(err, ErrConfig) true.
func (e *ConfigError) Is(target error) bool { return target == ErrConfig }

func configErrorf(field, format string, args ...any) *ConfigError {
	return &ConfigError{Field: field, Msg: configOneLine(fmt.Sprintf(format, args...))}
}

// ConfigProblems is every problem of a configuration, file problems and
// unknown keys first, then by key in configKeys order. errors.As finds the
// first *ConfigError; the runner prints one line each.
type ConfigProblems []*ConfigError

// Error is the first problem, one line, with how many more there are.
func (p ConfigProblems) Error() string {
	if len(p) == 1 {
		return p[0].Error()
	}
	return fmt.Sprintf("%s (and %d more problems)", p[0].Error(), len(p)-1)
}

// Unwrap returns the problems, for errors.Is and errors.As.
func (p ConfigProblems) Unwrap() []error {
	out := make([]error, len(p))
	for i, e := range p {
		out[i] = e
	}
	return out
}

// configProblemsOf returns err's problems, one line each, or nil when err
// holds none.
func configProblemsOf(err error) []*ConfigError {
	var ps ConfigProblems
	if errors.As(err, &ps) {
		return ps
	}
	var ce *ConfigError
	if errors.As(err, &ce) {
		return []*ConfigError{ce}
	}
	return nil
}

// problems collects ConfigErrors while loading, at most one per key.
type problems struct {
	list []*ConfigError
	keys map[string]bool
}

func (p *problems) add(e *ConfigError) {
	if e.Field != "" {
		if p.keys[e.Field] {
			return
		}
		if p.keys == nil {
			p.keys = map[string]bool{}
		}
		p.keys[e.Field] = true
	}
	p.list = append(p.list, e)
}

func (p *problems) has(key string) bool { return p.keys[key] }

// err sorts the problems (those without a key first, in the order found)
// and returns them, or nil.
func (p *problems) err() error {
	if len(p.list) == 0 {
		return nil
	}
	slices.SortStableFunc(p.list, func(a, b *ConfigError) int {
		ka, kb := -1, -1
		if a.Field != "" {
			ka = configKeyOrder[a.Field]
		}
		if b.Field != "" {
			kb = configKeyOrder[b.Field]
		}
		return ka - kb
	})
	return ConfigProblems(p.list)
}

// configOneLine joins a (decoder's) multi-line message into one line.
func configOneLine(s string) string {
	lines := strings.FieldsFunc(s, func(r rune) bool { return r == '\n' || r == '\r' })
	for i, l := range lines {
		lines[i] = strings.TrimSpace(l)
	}
	return strings.Join(slices.DeleteFunc(lines, func(l string) bool { return l == "" }), " ")
}

// source is where a key's value came from.
type source string

const (
	sourceDefault source = "default"
	sourceFile    source = "file"
	sourceEnv     source = "env"
	sourceFlag    source = "flag"
)

// set reports whether someone set the key (it is not a default).
func (s source) set() bool { return s != "" && s != sourceDefault }

// textValue is a value written as text (an environment variable, a flag):
// the decode hook parses it into the key's type. from names it in errors.
type textValue struct {
	text, from string
	// argv: the key is argv-like (task.command, task.env), whose text must
	// be a JSON array (an element may hold a comma).
	argv bool
}

// configSources are the inputs of one load.
type configSources struct {
	// file is the -c file, "" for none.
	file string
	// environ is "NAME=value" entries, as os.Environ returns.
	environ []string
	// flags maps dotted keys to raw values (--set and the named flags).
	flags map[string]string
	// forRun: the configuration runs tasks (task.* must be complete).
	forRun bool
}

// loadConfig reads file (none when ""), then the RUNNER_* variables of
// environ, then overrides (dotted key to raw value, as from flags), and
// validates the result. The error is a ConfigProblems of every problem.
func loadConfig(file string, environ []string, overrides map[string]string) (*Config, error) {
	return loadConfigFor(file, environ, overrides, true)
}

// loadConfigFor is loadConfig; the task section is checked only when
// forRun (the pool and config commands run no task).
func loadConfigFor(file string, environ []string, overrides map[string]string, forRun bool) (*Config, error) {
	c, _, err := loadConfigFrom(configSources{file: file, environ: environ, flags: overrides, forRun: forRun})
	return c, err
}

// loadConfigFrom loads src, and says where each key's value came from.
func loadConfigFrom(src configSources) (*Config, configOrigins, error) {
	var probs problems
	dec := &configDecoders{probs: &probs, set: map[string]bool{}}
	v := viper.NewWithOptions(viper.WithDecoderRegistry(dec))
	for key, val := range configDefaults() {
		v.SetDefault(key, val)
	}
	c := &Config{skipTask: !src.forRun}
	origin := configOrigins{}
	if src.file != "" {
		if err := readConfigFile(v, src.file); err != nil {
			return nil, nil, ConfigProblems{err}
		}
		for key := range dec.set {
			origin[key] = sourceFile
		}
	}
	if env := readConfigEnv(src.environ, &probs); len(env) > 0 {
		if err := v.MergeConfigMap(nest(env, origin, sourceEnv)); err != nil {
			return nil, nil, ConfigProblems{configErrorf("", "environment: %v", err)}
		}
	}
	for _, key := range slices.Sorted(mapsKeys(src.flags)) {
		if _, ok := configKeyByName[key]; !ok {
			probs.add(configErrorf("", "unknown key %q in flags%s", key, configHint(key, configKeyNames())))
			continue
		}
		v.Set(key, textValue{text: src.flags[key], from: "flags", argv: configKeyByName[key].argv})
		origin[key] = sourceFlag
	}
	for _, k := range configKeys {
		if !origin[k.name].set() {
			origin[k.name] = sourceDefault
		}
		if v.Get(k.name) == nil {
			continue
		}
		if err := v.UnmarshalKey(k.name, k.field(c), strictDecoding); err != nil {
			probs.add(decodeProblem(k, err))
		}
	}
	c.deriveDefaults(origin)
	c.validate(origin, &probs)
	if err := probs.err(); err != nil {
		return nil, nil, err
	}
	return c, origin, nil
}

func mapsKeys[V any](m map[string]V) func(func(string) bool) {
	return func(yield func(string) bool) {
		for k := range m {
			if !yield(k) {
				return
			}
		}
	}
}

// nest turns dotted keys into viper's nested tables, recording src.
func nest(flat map[string]any, origin configOrigins, src source) map[string]any {
	out := map[string]any{}
	for key, val := range flat {
		origin[key] = src
		parts := strings.Split(key, ".")
		m := out
		for _, p := range parts[:len(parts)-1] {
			sub, ok := m[p].(map[string]any)
			if !ok {
				sub = map[string]any{}
				m[p] = sub
			}
			m = sub
		}
		m[parts[len(parts)-1]] = val
	}
	return out
}

// strictDecoding: no weak typing, nothing but the hook converts; a field
// decoded from text (environment, flags) or a file value goes through
// decodeConfigValue.
func strictDecoding(dc *mapstructure.DecoderConfig) {
	dc.WeaklyTypedInput = false
	dc.ErrorUnused = true
	dc.ZeroFields = true
	dc.DecodeHook = mapstructure.DecodeHookFuncValue(decodeConfigValue)
}

// decodeKey decodes v as k's value into a scratch field, only to check it.
func decodeKey(k configKey, v any) *ConfigError {
	scratch := reflect.New(reflect.TypeOf(k.field(&Config{})).Elem())
	dc := &mapstructure.DecoderConfig{Result: scratch.Interface()}
	strictDecoding(dc)
	dec, err := mapstructure.NewDecoder(dc)
	if err == nil {
		err = dec.Decode(v)
	}
	if err != nil {
		return decodeProblem(k, err)
	}
	return nil
}

// decodeProblem turns an error of UnmarshalKey into the key's problem.
func decodeProblem(k configKey, err error) *ConfigError {
	var ce *ConfigError
	if errors.As(err, &ce) {
		return &ConfigError{Field: k.name, Msg: ce.Msg}
	}
	return configErrorf(k.name, "%v", err)
}

// decodeConfigValue is the decode hook: it converts from into to's type or
// says why not, quoting text only when the key is not a secret (the
// caller's key is unknown here, so secrets are strings: never quoted).
func decodeConfigValue(from, to reflect.Value) (any, error) {
	data := from.Interface()
	tv, isText := data.(textValue)
	bad := func(format string, args ...any) error {
		e := configErrorf("", format, args...)
		if isText && tv.from != "" {
			e.Msg += " (from " + configQuoteName(tv.from) + ")"
		}
		return e
	}
	switch to.Type() {
	case reflect.TypeFor[time.Duration]():
		switch v := data.(type) {
		case time.Duration:
			return v, nil
		case textValue, string:
			s := fmt.Sprint(textOf(data))
			d, msg := parseConfigDuration(s)
			if msg != "" {
				return nil, bad("%s", msg)
			}
			return d, nil
		case int, int64, uint64, float64, json.Number:
			if n, ok := configInt(v); ok && n == 0 {
				return time.Duration(0), nil
			}
			return nil, bad("bare number %v has no unit; write a Go duration such as \"30s\" or \"1m30s\"", v)
		}
		return nil, bad(`want a Go duration string such as "30s", got %s`, describeConfigValue(data))
	case reflect.TypeFor[int]():
		switch v := data.(type) {
		case textValue, string:
			s := textOf(data)
			n, err := strconv.Atoi(strings.TrimSpace(s))
			if err != nil {
				return nil, bad("want an integer, got %q", s)
			}
			return n, nil
		default:
			if n, ok := configInt(v); ok {
				return n, nil
			}
		}
		return nil, bad("want an integer, got %s", describeConfigValue(data))
	case reflect.TypeFor[bool]():
		switch v := data.(type) {
		case bool:
			return v, nil
		case textValue, string:
			s := textOf(data)
			b, err := strconv.ParseBool(strings.TrimSpace(s))
			if err != nil {
				return nil, bad("want true or false, got %q", s)
			}
			return b, nil
		}
		return nil, bad("want true or false, got %s", describeConfigValue(data))
	case reflect.TypeFor[string](), reflect.TypeFor[configSecret]():
		switch data.(type) {
		case textValue, string:
			return reflect.ValueOf(textOf(data)).Convert(to.Type()).Interface(), nil
		}
		return nil, bad("want a string (quote it), got %s", describeConfigValue(data))
	case reflect.TypeFor[[]string]():
		return decodeConfigList(data, isText, tv, bad)
	}
	return data, nil
}

func textOf(data any) string {
	if tv, ok := data.(textValue); ok {
		return tv.text
	}
	return data.(string)
}

// decodeConfigList decodes a list of strings: a list from a file; from
// text a JSON array, or (for lists that are not argv-like) comma-separated
// values.
func decodeConfigList(data any, isText bool, tv textValue, bad func(string, ...any) error) (any, error) {
	switch v := data.(type) {
	case []string:
		return v, nil
	case []any:
		out := make([]string, len(v))
		for i, e := range v {
			s, ok := e.(string)
			if !ok {
				return nil, bad("element %d: want a string (quote it), got %s", i, describeConfigValue(e))
			}
			out[i] = s
		}
		return out, nil
	case map[string]any:
		return nil, bad(`want a list of strings, got a table (task.env is a list of "NAME=value" strings since the runner reads its config with viper, which lowercases table keys: write [%q])`, "NAME=value")
	}
	if !isText {
		return nil, bad("want a list of strings, got %s", describeConfigValue(data))
	}
	t := strings.TrimSpace(tv.text)
	switch {
	case strings.HasPrefix(t, "["):
		var list []string
		if err := json.Unmarshal([]byte(t), &list); err != nil {
			return nil, bad("want a JSON array of strings: %v", err)
		}
		return list, nil
	case strings.HasPrefix(t, "{"):
		return nil, bad(`want a JSON array of "NAME=value" strings, such as ["LANG=C"] (the table form is no longer read)`)
	case tv.argv:
		return nil, bad(`want a JSON array of strings, such as ["sh","-c","echo hi"]`)
	case t == "":
		return []string{}, nil
	}
	list := strings.Split(t, ",")
	for i := range list {
		list[i] = strings.TrimSpace(list[i])
	}
	return list, nil
}

// maxConfigFile bounds what readConfigFile reads: no configuration comes
// near it, and "-c /dev/zero" or a runaway generator must not fill memory.
const maxConfigFile = 16 << 20

// readConfigFile has viper read a .yaml/.yml, .toml or .json file through
// configDecoders.
func readConfigFile(v *viper.Viper, file string) *ConfigError {
	ext := strings.ToLower(filepath.Ext(file))
	format := map[string]string{".yaml": "yaml", ".yml": "yaml", ".toml": "toml", ".json": "json"}[ext]
	if format == "" {
		return configErrorf("", "reading %q: unknown file type %q (want .yaml, .yml, .toml or .json)", file, ext)
	}
	data, err := readConfigBytes(file)
	if err != nil {
		var pe *os.PathError
		if errors.As(err, &pe) {
			err = pe.Err
		}
		return configErrorf("", "reading %q: %v", file, err)
	}
	v.SetConfigType(format)
	if err := v.ReadConfig(bytes.NewReader(data)); err != nil {
		var ce *ConfigError
		if errors.As(err, &ce) {
			return configErrorf("", "parsing %q: %s", file, ce.Msg)
		}
		return configErrorf("", "parsing %q: %v", file, err)
	}
	return nil
}

// readConfigBytes reads file, refusing one longer than maxConfigFile.
func readConfigBytes(file string) ([]byte, error) {
	f, err := os.Open(file)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxConfigFile+1))
	if err == nil && len(data) > maxConfigFile {
		err = fmt.Errorf("longer than %d MiB", maxConfigFile>>20)
	}
	return data, err
}

// configDecoders is viper's decoder registry for config files: it decodes
// with the YAML, TOML and JSON libraries viper itself uses, keeps their
// messages to one line without quoting content, and hands viper only the
// known keys; unknown keys and tables where a value belongs are problems.
type configDecoders struct {
	probs *problems
	// set holds the keys the file gave a value.
	set map[string]bool
}

func (d *configDecoders) Decoder(format string) (viper.Decoder, error) {
	return configDecoder{d: d, format: format}, nil
}

type configDecoder struct {
	d      *configDecoders
	format string
}

var configYAMLQuoted = regexp.MustCompile("`[^`]*`")

// Decode decodes a whole file into out.
func (cd configDecoder) Decode(data []byte, out map[string]any) error {
	var top any
	var err error
	switch cd.format {
	case "yaml":
		if err = yaml.Unmarshal(data, &top); err != nil {
			// Type errors quote content between backquotes: hide it.
			err = errors.New(configYAMLQuoted.ReplaceAllString(err.Error(), "`...`"))
		}
	case "toml":
		doc := map[string]any{}
		err = toml.Unmarshal(data, &doc)
		top = doc
		var de *toml.DecodeError
		if errors.As(err, &de) {
			row, col := de.Position()
			err = fmt.Errorf("line %d column %d: %w", row, col, err)
		}
	default:
		err = decodeConfigJSON(data, &top)
	}
	if err != nil {
		return &ConfigError{Msg: configOneLine(err.Error())}
	}
	switch doc := top.(type) {
	case nil:
		return nil
	case map[string]any:
		cd.apply("", doc, out)
		return nil
	default:
		return &ConfigError{Msg: "want a table of keys at the top, got " + describeConfigValue(top)}
	}
}

// apply copies the known keys of table (under prefix) into out.
func (cd configDecoder) apply(prefix string, table map[string]any, out map[string]any) {
	for _, name := range slices.Sorted(mapsKeys(table)) {
		full := name
		if prefix != "" {
			full = prefix + "." + name
		}
		v := table[name]
		if k, ok := configKeyByName[full]; ok {
			if v == nil { // "key:" with no value leaves the default
				continue
			}
			// Checked here, so that a bad value is reported even when
			// the environment or a flag overrides it.
			if err := decodeKey(k, v); err != nil {
				cd.d.probs.add(err)
				continue
			}
			out[name] = v
			cd.d.set[full] = true
			continue
		}
		if !isConfigTable(full) {
			cd.d.probs.add(configErrorf("", "unknown key %q%s", full, configHint(full, configKeyNames())))
			continue
		}
		switch sub := v.(type) {
		case nil:
		case map[string]any:
			m := map[string]any{}
			cd.apply(full, sub, m)
			out[name] = m
		default:
			cd.d.probs.add(configErrorf(full, "want a table of keys, got %s", describeConfigValue(v)))
		}
	}
}

func decodeConfigJSON(data []byte, doc *any) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	err := dec.Decode(doc)
	if err == nil {
		if _, err = dec.Token(); err == io.EOF {
			return nil
		}
		return errors.New("trailing data after the JSON object")
	}
	var off int64 = -1
	var se *json.SyntaxError
	var te *json.UnmarshalTypeError
	switch {
	case errors.As(err, &se):
		off = se.Offset
	case errors.As(err, &te):
		off = te.Offset
	}
	if off >= 0 && off <= int64(len(data)) {
		return fmt.Errorf("line %d: %w", 1+bytes.Count(data[:off], []byte("\n")), err)
	}
	return err
}

// readConfigEnv returns the RUNNER_* variables of environ by key, as
// textValue. A variable of a known section (RUNNER_WORKER_...) must name a
// key; others (RUNNER_ITEM) are not the runner's and are ignored, as are
// empty values. The first of a name wins, as with os.Getenv.
func readConfigEnv(environ []string, probs *problems) map[string]any {
	out := map[string]any{}
	seen := map[string]bool{}
	for _, kv := range environ {
		name, val, ok := strings.Cut(kv, "=")
		if !ok || !strings.HasPrefix(name, "RUNNER_") || seen[name] {
			continue
		}
		seen[name] = true
		k, known := configKeyByEnv[name]
		if !known {
			section, _, sub := strings.Cut(strings.TrimPrefix(name, "RUNNER_"), "_")
			if sub && configSections[section] {
				envs := make([]string, len(configKeys))
				for i, k := range configKeys {
					envs[i] = k.env()
				}
				probs.add(configErrorf("", "unknown environment variable %s%s", configQuoteName(name), configHint(name, envs)))
			}
			continue
		}
		if val == "" {
			continue
		}
		out[k.name] = textValue{text: val, from: name, argv: k.argv}
	}
	return out
}
