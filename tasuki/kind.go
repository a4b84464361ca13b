package tasuki

import (
	"fmt"
	"reflect"
	"strings"
	"unicode/utf8"
)

// MaxKindLength is the longest kind, in characters.
const MaxKindLength = 128

// Kinder is implemented by payload types. Kind returns the job kind: the
// stable name under which jobs of the type are stored and by which a worker
// process finds their handler. It must not change once jobs of the type
// exist, so that renaming the Go type does not strand them; 1 to 128
// characters. Kind is called on the zero value of the type.
//
//	type SendEmail struct{ To string }
//
//	func (SendEmail) Kind() string { return "send_email" }
type Kinder interface {
	Kind() string
}

// KindOf returns the kind of payload type T: given, when it is not empty
// (a kind set in a configuration, for a type that cannot have methods of
// its own), else what T's Kind method returns. A type without either gives
// an *InvalidOptionError that says so; option names the setting for it.
func KindOf[T any](option, given string) (string, error) {
	kind := given
	if kind == "" {
		var ok bool
		if kind, ok = kindMethod[T](); !ok {
			return "", &InvalidOptionError{Option: option, Value: given,
				Reason: fmt.Sprintf("payload type %s has no Kind() string method: add one that returns a stable name for its jobs, or set %s", typeName[T](), option)}
		}
		option = typeName[T]() + ".Kind()"
	}
	if err := ValidateKind(option, kind); err != nil {
		return "", err
	}
	return kind, nil
}

// kindMethod calls T's Kind method on T's zero value, whether it is
// declared on T or on *T.
func kindMethod[T any]() (kind string, ok bool) {
	// A Kind method on a pointer type that reads its receiver panics on
	// the nil zero value: that is no kind.
	defer func() {
		if recover() != nil {
			kind, ok = "", false
		}
	}()
	var zero T
	k, ok := any(zero).(Kinder)
	if !ok {
		k, ok = any(&zero).(Kinder)
	}
	if !ok {
		return "", false
	}
	// For a pointer type, a Kind method declared on the element type
	// is called on a zero element rather than on the nil pointer.
	if t := reflect.TypeOf(zero); t != nil && t.Kind() == reflect.Pointer {
		if e, isKinder := reflect.New(t.Elem()).Interface().(Kinder); isKinder {
			k = e
		}
	}
	return k.Kind(), true
}

// ValidateKind checks a kind: 1 to 128 characters of valid UTF-8 without
// NUL. option
// names the setting it came from, for the *InvalidOptionError it returns
// otherwise.
func ValidateKind(option, kind string) error {
	switch n := utf8.RuneCountInString(kind); {
	case !utf8.ValidString(kind) || strings.ContainsRune(kind, 0):
		return &InvalidOptionError{Option: option, Value: kind, Reason: "a kind is valid UTF-8 without NUL characters"}
	case n == 0:
		return &InvalidOptionError{Option: option, Value: kind, Reason: "a kind has 1 to 128 characters"}
	case n > MaxKindLength:
		return &InvalidOptionError{Option: option, Value: kind, Reason: fmt.Sprintf("a kind has 1 to %d characters", MaxKindLength)}
	}
	return nil
}
