package i18n_test

import (
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"

	"github.com/dispatchhq/dispatch/internal/i18n"
)

// TestCatalogsHaveTheSameKeys: every message exists in every language.
func TestCatalogsHaveTheSameKeys(t *testing.T) {
	en, pt := i18n.Keys(i18n.English), i18n.Keys(i18n.Portuguese)
	if len(en) == 0 {
		t.Fatal("the English catalog is empty")
	}
	for _, k := range en {
		if !slices.Contains(pt, k) {
			t.Errorf("pt-BR lacks %q", k)
		}
	}
	for _, k := range pt {
		if !slices.Contains(en, k) {
			t.Errorf("en lacks %q", k)
		}
	}
}

var placeholder = regexp.MustCompile(`\{[A-Za-z]+\}`)

// TestCatalogMessagesAreUsable: no empty message, no message that is its own key, the same
// placeholders in both languages, and a real translation for every error message.
func TestCatalogMessagesAreUsable(t *testing.T) {
	for _, k := range i18n.Keys(i18n.English) {
		en, pt := i18n.T(i18n.English, k, nil), i18n.T(i18n.Portuguese, k, nil)
		if strings.TrimSpace(en) == "" || strings.TrimSpace(pt) == "" || en == k || pt == k {
			t.Errorf("%s: unusable message en=%q pt-BR=%q", k, en, pt)
		}
		pe, pp := placeholder.FindAllString(en, -1), placeholder.FindAllString(pt, -1)
		sort.Strings(pe)
		sort.Strings(pp)
		if !slices.Equal(pe, pp) {
			t.Errorf("%s: placeholders differ: en %v, pt-BR %v", k, pe, pp)
		}
		if strings.Contains(k, ".errors.") && en == pt {
			t.Errorf("%s: pt-BR message is the English one: %q", k, en)
		}
	}
}

func TestT(t *testing.T) {
	if got := i18n.T(i18n.English, "validation.length", map[string]any{"min": 2, "max": 100}); got != "must be between 2 and 100 characters" {
		t.Errorf("en length = %q", got)
	}
	if got := i18n.T(i18n.Portuguese, "validation.length", map[string]any{"min": 2, "max": 100}); got != "deve ter entre 2 e 100 caracteres" {
		t.Errorf("pt-BR length = %q", got)
	}
	if got := i18n.T(i18n.Portuguese, "users.errors.roleNotAllowed", map[string]any{"role": "admin"}); !strings.Contains(got, "admin") || strings.Contains(got, "{role}") {
		t.Errorf("pt-BR roleNotAllowed = %q", got)
	}
	// Unknown languages read English; unknown keys read as themselves.
	if got := i18n.T("fr", "auth.errors.forbidden", nil); got != i18n.T(i18n.English, "auth.errors.forbidden", nil) {
		t.Errorf("unknown language = %q", got)
	}
	if got := i18n.T(i18n.Portuguese, "no.such.key", nil); got != "no.such.key" {
		t.Errorf("unknown key = %q", got)
	}
}

func TestSupported(t *testing.T) {
	for tag, want := range map[string]string{
		"en": "en", "EN": "en", "en-US": "en", "en-gb": "en", " en ": "en",
		"pt": "pt-BR", "pt-BR": "pt-BR", "pt-br": "pt-BR", "PT-BR": "pt-BR", "pt-PT": "pt-BR",
		"pt_BR": "pt-BR", "pt_br": "pt-BR", "en_US": "en",
		"fr": "", "": "", "english": "", "portuguese": "", "ptbr": "", "e": "", "*": "",
	} {
		got, ok := i18n.Supported(tag)
		if got != want || ok != (want != "") {
			t.Errorf("Supported(%q) = %q, %v; want %q", tag, got, ok, want)
		}
	}
}

func TestFromAcceptLanguage(t *testing.T) {
	for header, want := range map[string]string{
		"":                             "",
		"pt":                           "pt-BR",
		"pt-BR":                        "pt-BR",
		"pt-BR,pt;q=0.9,en;q=0.8":      "pt-BR",
		"en-US,en;q=0.9,pt-BR;q=0.8":   "en",
		"fr":                           "",
		"fr-FR, fr;q=0.9, pt;q=0.5":    "pt-BR",
		"de;q=0.9, en;q=0.2, pt;q=0.3": "pt-BR",
		"pt;q=0":                       "",
		"pt;q=abc, en":                 "en",
		"*":                            "",
		" en ; q=0.5 ":                 "en",
	} {
		if got := i18n.FromAcceptLanguage(header); got != want {
			t.Errorf("FromAcceptLanguage(%q) = %q, want %q", header, got, want)
		}
	}
}

// codePattern matches string literals that are error or validation codes.
var codePattern = regexp.MustCompile(`^([a-z][A-Za-z]*\.errors\.[A-Za-z]+|validation\.[A-Za-z]+)$`)

// TestEveryCodeInTheSourcesIsTranslated scans the module's non-test Go sources for string
// literals that look like error or validation codes and requires an entry in both catalogs.
func TestEveryCodeInTheSourcesIsTranslated(t *testing.T) {
	root := moduleRoot(t)
	found := map[string][]string{} // code → where
	fset := token.NewFileSet()
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			if name := d.Name(); path != root && (strings.HasPrefix(name, ".") || name == "vendor" || name == "testdata" || name == "node_modules") {
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return nil
		}
		f, err := parser.ParseFile(fset, path, nil, parser.SkipObjectResolution)
		if err != nil {
			return err
		}
		ast.Inspect(f, func(n ast.Node) bool {
			lit, ok := n.(*ast.BasicLit)
			if !ok || lit.Kind != token.STRING {
				return true
			}
			s, err := strconv.Unquote(lit.Value)
			if err == nil && codePattern.MatchString(s) {
				rel, _ := filepath.Rel(root, fset.Position(lit.Pos()).Filename)
				found[s] = append(found[s], rel+":"+strconv.Itoa(fset.Position(lit.Pos()).Line))
			}
			return true
		})
		return nil
	})
	if err != nil {
		t.Fatalf("scan sources: %v", err)
	}
	// The scan must see the codes we know are there, or it proves nothing.
	for _, known := range []string{"users.errors.emailAlreadyExists", "auth.errors.forbidden", "common.errors.validation", "validation.length"} {
		if _, ok := found[known]; !ok {
			t.Fatalf("the scan missed %q: it is not looking at the sources", known)
		}
	}
	codes := make([]string, 0, len(found))
	for c := range found {
		codes = append(codes, c)
	}
	sort.Strings(codes)
	for _, c := range codes {
		for _, lang := range i18n.Languages {
			if !i18n.Has(lang, c) {
				t.Errorf("%s (used at %s) has no %s message", c, strings.Join(found[c], ", "), lang)
			}
		}
	}
	t.Logf("%d codes checked", len(codes))
}

func moduleRoot(t *testing.T) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatal("go.mod not found above the test's directory")
		}
		dir = parent
	}
}
