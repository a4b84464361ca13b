package tasukiotel

import (
	"bytes"
	"encoding/json"
)

// carrierOf returns the object of strings stored under key at the top
// level of the JSON object metadata, or nil when there is none (no such
// key, or something else under it). It reads metadata in one pass and
// allocates only the carrier: encoding/json, which decodes every other
// key too, cost more than the span itself on each attempt. key is one
// that JSON writes as it is (checkMetadataKey), so it is compared with
// the key's raw bytes.
func carrierOf(metadata []byte, key string) map[string]string {
	s := scanner{b: metadata}
	if !s.byte('{') {
		return nil
	}
	if s.peek() == '}' {
		return nil
	}
	for {
		name, ok := s.str()
		if !ok || !s.byte(':') {
			return nil
		}
		if string(name) == key {
			return s.flatObject()
		}
		if !s.skipValue() {
			return nil
		}
		switch s.next() {
		case ',':
		default: // '}' or malformed
			return nil
		}
	}
}

// scanner walks JSON text that is already known to be valid (jsonb's
// output): it checks only what it needs to find its way.
type scanner struct {
	b []byte
	i int
}

func (s *scanner) ws() {
	for s.i < len(s.b) {
		switch s.b[s.i] {
		case ' ', '\t', '\n', '\r':
			s.i++
		default:
			return
		}
	}
}

// peek is the next byte after white space; 0 at the end.
func (s *scanner) peek() byte {
	s.ws()
	if s.i < len(s.b) {
		return s.b[s.i]
	}
	return 0
}

// next consumes and returns the next byte after white space.
func (s *scanner) next() byte {
	c := s.peek()
	if c != 0 {
		s.i++
	}
	return c
}

// byte consumes c, the next byte after white space, or reports false.
func (s *scanner) byte(c byte) bool {
	if s.peek() != c {
		return false
	}
	s.i++
	return true
}

// str consumes a string and returns its raw content, escapes included.
func (s *scanner) str() ([]byte, bool) {
	if !s.byte('"') {
		return nil, false
	}
	start := s.i
	for s.i < len(s.b) {
		switch s.b[s.i] {
		case '\\':
			s.i += 2
		case '"':
			s.i++
			return s.b[start : s.i-1], true
		default:
			s.i++
		}
	}
	return nil, false
}

// skipValue consumes one value of any kind.
func (s *scanner) skipValue() bool {
	switch s.peek() {
	case '"':
		_, ok := s.str()
		return ok
	case '{', '[':
		depth := 0
		for s.i < len(s.b) {
			switch s.b[s.i] {
			case '"':
				if _, ok := s.str(); !ok {
					return false
				}
				continue
			case '{', '[':
				depth++
			case '}', ']':
				depth--
			}
			s.i++
			if depth == 0 {
				return true
			}
		}
		return false
	case 0:
		return false
	default: // a number, true, false or null
		for s.i < len(s.b) {
			switch s.b[s.i] {
			case ',', '}', ']', ' ', '\t', '\n', '\r':
				return true
			}
			s.i++
		}
		return true
	}
}

// flatObject consumes an object whose values are all strings and returns
// it; nil for anything else, or an empty object.
func (s *scanner) flatObject() map[string]string {
	if !s.byte('{') || s.peek() == '}' {
		return nil
	}
	out := make(map[string]string, 2)
	for {
		k, ok := s.str()
		if !ok || !s.byte(':') {
			return nil
		}
		v, ok := s.str()
		if !ok {
			return nil
		}
		ks, ok1 := unescape(k)
		vs, ok2 := unescape(v)
		if !ok1 || !ok2 {
			return nil
		}
		out[ks] = vs
		switch s.next() {
		case ',':
		case '}':
			return out
		default:
			return nil
		}
	}
}

// unescape turns a string's raw content into its value: as it is without
// a backslash (traceparent never has one), else as encoding/json reads it.
func unescape(raw []byte) (string, bool) {
	if bytes.IndexByte(raw, '\\') < 0 {
		return string(raw), true
	}
	var v string
	quoted := make([]byte, 0, len(raw)+2)
	quoted = append(append(append(quoted, '"'), raw...), '"')
	return v, json.Unmarshal(quoted, &v) == nil
}
