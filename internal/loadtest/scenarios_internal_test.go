package loadtest

import "testing"

// Order i has i%Lines+1 lines, of distinct items, each of 1 to Units units; every quantity in
// that range turns up.
func TestOrdersTakeTheShapeAsked(t *testing.T) {
	t.Parallel()
	s := &Stack{Lines: 3, Units: 3, items: []string{"a", "b", "c", "d", "e", "f"}}
	units := map[int]int{}
	for i := range 300 {
		lines := s.orderBody(i)["items"].([]map[string]any)
		if len(lines) != i%3+1 {
			t.Fatalf("order %d has %d lines, want %d", i, len(lines), i%3+1)
		}
		seen := map[any]bool{}
		for _, l := range lines {
			if seen[l["itemId"]] {
				t.Fatalf("order %d takes item %v twice", i, l["itemId"])
			}
			seen[l["itemId"]] = true
			q := l["quantity"].(int)
			if q < 1 || q > 3 {
				t.Fatalf("order %d has a line of %d units", i, q)
			}
			units[q]++
		}
	}
	for q := 1; q <= 3; q++ {
		if units[q] == 0 {
			t.Errorf("no line of %d units in 300 orders (%v)", q, units)
		}
	}
}
