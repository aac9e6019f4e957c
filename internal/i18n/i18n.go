// Package i18n holds the message catalogs (en, pt-BR) and renders messages and money.
//
// Messages use {name} placeholders filled from a params map. A key missing from a catalog falls
// back to English, then to the key itself, so a missing translation is visible but never fatal.
package i18n

import (
	"embed"
	"encoding/json"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"
)

// The supported languages. English is the default.
const (
	English    = "en"
	Portuguese = "pt-BR"
)

// Languages lists the supported language tags.
var Languages = []string{English, Portuguese}

//go:embed locales/*.json
var files embed.FS

var catalogs = mustLoad()

func mustLoad() map[string]map[string]string {
	out := map[string]map[string]string{}
	for _, lang := range Languages {
		raw, err := files.ReadFile("locales/" + lang + ".json")
		if err != nil {
			panic(err)
		}
		m := map[string]string{}
		if err := json.Unmarshal(raw, &m); err != nil {
			panic(fmt.Sprintf("i18n: %s: %v", lang, err))
		}
		out[lang] = m
	}
	return out
}

// Keys returns the sorted keys of lang's catalog.
func Keys(lang string) []string {
	keys := make([]string, 0, len(catalogs[lang]))
	for k := range catalogs[lang] {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// Has reports whether lang's catalog has key.
func Has(lang, key string) bool {
	_, ok := catalogs[lang][key]
	return ok
}

// T renders key in lang with params.
func T(lang, key string, params map[string]any) string {
	msg, ok := catalogs[lang][key]
	if !ok {
		if msg, ok = catalogs[English][key]; !ok {
			return key
		}
	}
	if len(params) == 0 || !strings.Contains(msg, "{") {
		return msg
	}
	pairs := make([]string, 0, 2*len(params))
	for k, v := range params {
		var text string
		switch v := v.(type) {
		case Amount:
			text = Money(lang, v.Minor, v.Currency)
		case Term:
			text = T(lang, string(v), nil)
		default:
			text = fmt.Sprint(v)
		}
		pairs = append(pairs, "{"+k+"}", text)
	}
	return strings.NewReplacer(pairs...).Replace(msg)
}

// Supported returns the canonical tag for a language the API speaks ("pt", "pt-br", "pt-PT",
// and "pt_BR" as locales write it → "pt-BR"; "en-US" → "en") and whether it is one.
func Supported(tag string) (string, bool) {
	t := strings.ReplaceAll(strings.ToLower(strings.TrimSpace(tag)), "_", "-")
	switch {
	case t == "en" || strings.HasPrefix(t, "en-"):
		return English, true
	case t == "pt" || strings.HasPrefix(t, "pt-"):
		return Portuguese, true
	}
	return "", false
}

// FromAcceptLanguage picks the best supported language of an Accept-Language header, or "" when
// none is acceptable.
func FromAcceptLanguage(header string) string {
	best, bestQ := "", 0.0
	for _, part := range strings.Split(header, ",") {
		tag, params, _ := strings.Cut(strings.TrimSpace(part), ";")
		q := 1.0
		if v, ok := strings.CutPrefix(strings.TrimSpace(params), "q="); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				continue
			}
			q = f
		}
		if lang, ok := Supported(tag); ok && q > bestQ {
			best, bestQ = lang, q
		}
	}
	return best
}

// Term is a parameter of a message that T renders as the catalog's text for the key in the
// message's language: a status, an action or a type named in words, not as a code.
type Term string

// DateTime writes t in UTC to the minute, the way lang writes dates: "2026-01-02 15:04 UTC"
// (en), "02/01/2026 15:04 UTC" (pt-BR).
func DateTime(lang string, t time.Time) string {
	layout := "2006-01-02 15:04 UTC"
	if lang == Portuguese {
		layout = "02/01/2006 15:04 UTC"
	}
	return t.UTC().Format(layout)
}

// Amount is a parameter of a message that T renders as Money in the message's language.
type Amount struct {
	Minor    int64
	Currency string
}

// Money formats minor units in the currency's symbol and the language's separators:
// 12345 usd → "$123.45" (en), "US$ 123,45" (pt-BR).
func Money(lang string, minor int64, currency string) string {
	neg := minor < 0
	if neg {
		minor = -minor
	}
	units, cents := minor/100, minor%100
	thousands, decimal := ",", "."
	if lang == Portuguese {
		thousands, decimal = ".", ","
	}
	digits := strconv.FormatInt(units, 10)
	var b strings.Builder
	for i, r := range digits {
		if i > 0 && (len(digits)-i)%3 == 0 {
			b.WriteString(thousands)
		}
		b.WriteRune(r)
	}
	amount := fmt.Sprintf("%s%s%02d", b.String(), decimal, cents)
	if neg {
		amount = "-" + amount
	}
	sym := symbols[lang][strings.ToLower(currency)]
	if sym == "" {
		return amount + " " + strings.ToUpper(currency)
	}
	if lang == Portuguese {
		return sym + " " + amount
	}
	return sym + amount
}

var symbols = map[string]map[string]string{
	English:    {"usd": "$", "eur": "€", "brl": "R$"},
	Portuguese: {"usd": "US$", "eur": "€", "brl": "R$"},
}
