package tasuki

import (
	"fmt"
	"reflect"
	"time"
)

// DefaultOpts is implemented by payload types that declare their kind's
// default insert options next to the type, so that callers need not
// repeat them at every insert. InsertOpts is called on the type's zero
// value, as Kind is. Of what it returns, Queue, Priority, MaxAttempts,
// Delay, Metadata, Unique and Timeout apply (RunAt does not: a fixed time
// is no default). Each option an insert sets wins over the default, field
// by field (Metadata key by key), and the defaults win over the client's
// ClientConfig; a default a call cannot undo that way (a Priority above 0,
// a Unique) is undone by a payload type of its own.
//
//	func (SendReport) InsertOpts() tasuki.InsertOpts {
//		return tasuki.InsertOpts{Queue: "reports", Unique: &tasuki.UniqueOpts{ByArgs: true, ByPeriod: time.Hour}}
//	}
type DefaultOpts interface {
	InsertOpts() InsertOpts
}

// defaultsOf returns the options typ's InsertOpts method gives, called as
// kindOf calls Kind; nil when it has none. A method that panics gives an
// error: its defaults (a uniqueness, say) must not be dropped silently.
func defaultsOf(typ reflect.Type) (opts *InsertOpts, err error) {
	if typ == nil {
		return nil, nil
	}
	defer func() {
		if v := recover(); v != nil {
			opts, err = nil, fmt.Errorf("tasuki: the InsertOpts method of %s panicked on the type's zero value: %v", typ, v)
		}
	}()
	v, ok := zeroReceiver(typ, reflect.TypeFor[DefaultOpts]())
	if !ok {
		return nil, nil
	}
	o := v.Interface().(DefaultOpts).InsertOpts()
	o.RunAt = time.Time{}
	return &o, nil
}

// zeroReceiver returns a zero value of typ on which the methods of iface
// can be called: typ's zero value, or a pointer to one when the methods
// are declared on the pointer type or typ is a pointer type (whose zero
// value is nil).
func zeroReceiver(typ, iface reflect.Type) (reflect.Value, bool) {
	switch {
	case typ.Kind() == reflect.Pointer && typ.Implements(iface):
		return reflect.New(typ.Elem()), true
	case typ.Implements(iface):
		return reflect.Zero(typ), true
	case reflect.PointerTo(typ).Implements(iface):
		return reflect.New(typ), true
	}
	return reflect.Value{}, false
}

// withDefaults returns opts over def: each field opts sets wins.
func withDefaults(def, opts *InsertOpts) *InsertOpts {
	if def == nil {
		return opts
	}
	out := *def
	if opts == nil {
		return &out
	}
	if opts.Queue != "" {
		out.Queue = opts.Queue
	}
	if opts.Priority != 0 {
		out.Priority = opts.Priority
	}
	if opts.MaxAttempts != 0 {
		out.MaxAttempts = opts.MaxAttempts
	}
	if !opts.RunAt.IsZero() {
		out.RunAt, out.Delay = opts.RunAt, 0
	}
	if opts.Delay != 0 {
		out.Delay = opts.Delay
	}
	if opts.Metadata != nil {
		// Merged: the call's keys win.
		merged := make(map[string]any, len(out.Metadata)+len(opts.Metadata))
		for k, v := range out.Metadata {
			merged[k] = v
		}
		for k, v := range opts.Metadata {
			merged[k] = v
		}
		out.Metadata = merged
	}
	if opts.Unique != nil {
		out.Unique = opts.Unique
	}
	if opts.Timeout != 0 {
		out.Timeout = opts.Timeout
	}
	return &out
}

// checkDefaults checks the default options of a payload type, so that a
// bad one fails where the client is made, not at the first insert.
func checkDefaults(cfg ClientConfig, typ reflect.Type, def *InsertOpts) error {
	if def == nil {
		return nil
	}
	if _, err := resolveInsertOpts(cfg, def); err != nil {
		return fmt.Errorf("tasuki: the default insert options of %s (its InsertOpts method): %w", typ, err)
	}
	return nil
}
