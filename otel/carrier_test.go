package tasukiotel

import (
	"encoding/json"
	"testing"

	"github.com/stretchr/testify/assert"
)

// carrierOf agrees with encoding/json on what is stored under the key.
func TestCarrierOfAgreesWithEncodingJSON(t *testing.T) {
	for _, doc := range []string{
		`{}`, `[]`, `""`, `{"otel": {}}`, `{"otel": null}`, `{"otel": "x"}`, `{"otel": 1}`,
		`{"otel": {"traceparent": "00-abc-01"}}`,
		`{"a": 1, "otel": {"traceparent": "00-abc-01", "tracestate": "k=v"}}`,
		`{"a": {"otel": {"traceparent": "nested"}}, "b": [1, "otel", {"x": "}"}]}`,
		`{"note": "\"otel\": {\"traceparent\": \"in a string\"}"}`,
		`{"a": [[], {}], "otel": {"traceparent": "after arrays"}}`,
		`{"OTEL": {"traceparent": "other case"}}`,
		`{"otel": {"traceparent": "esc\"aped\\u00e9"}}`,
		`{"otel": {"traceparent": 1}}`,
		`{"otel": {"traceparent": "a", "x": {"y": "z"}}}`,
		`{"a": true, "b": false, "c": null, "d": -1.5e3, "otel": {"baggage": "k=v"}}`,
		`{"otel": {"traceparent": "a"}, "otel2": {"traceparent": "b"}}`,
		`{"otel": {"traceparent"`, `{"otel": `, `{"a": "unterminated`,
	} {
		want := map[string]string(nil)
		var fields map[string]json.RawMessage
		if json.Unmarshal([]byte(doc), &fields) == nil {
			var c map[string]string
			if raw, ok := fields["otel"]; ok && json.Unmarshal(raw, &c) == nil && len(c) > 0 {
				want = c
			}
		}
		assert.Equal(t, want, carrierOf([]byte(doc), "otel"), doc)
	}
}

// FuzzCarrierOf: on any input carrierOf does not panic; on metadata as
// PostgreSQL returns it (valid UTF-8, each key once: a round trip through
// encoding/json makes any valid JSON so), it agrees with encoding/json.
func FuzzCarrierOf(f *testing.F) {
	f.Add([]byte(`{"a": [1, {"b": "c"}], "otel": {"traceparent": "x"}}`))
	f.Fuzz(func(t *testing.T, doc []byte) {
		carrierOf(doc, "otel")
		var v any
		if json.Unmarshal(doc, &v) != nil {
			return
		}
		stored, err := json.Marshal(v)
		if err != nil {
			return
		}
		var fields map[string]json.RawMessage
		var want map[string]string
		if json.Unmarshal(stored, &fields) == nil {
			if raw, ok := fields["otel"]; !ok || json.Unmarshal(raw, &want) != nil || len(want) == 0 {
				want = nil
			}
		}
		assert.Equal(t, want, carrierOf(stored, "otel"), string(stored))
	})
}
