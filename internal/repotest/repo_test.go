// Package repotest holds tests of the repository's own rules: import
// directions, package documentation and what production code may import.
// It has no non-test code.
package repotest

import (
	"go/parser"
	"go/token"
	"io/fs"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
)

const module = "github.com/ferry-im/ferry"

// pkg is what the rules need to know of one package directory.
type pkg struct {
	path    string          // import path
	name    string          // package name of the non-test files
	doc     bool            // some non-test file has a package doc comment
	imports map[string]bool // imports of non-test files
}

// loadPackages parses the non-test Go files of every package in the module.
func loadPackages(t *testing.T) map[string]*pkg {
	t.Helper()
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	pkgs := map[string]*pkg{}
	fset := token.NewFileSet()
	err = filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			name := d.Name()
			if path != root && (name == "testdata" || strings.HasPrefix(name, ".") || strings.HasPrefix(name, "_")) {
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return nil
		}
		f, err := parser.ParseFile(fset, path, nil, parser.ImportsOnly|parser.ParseComments)
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, filepath.Dir(path))
		ip := module
		if rel != "." {
			ip += "/" + filepath.ToSlash(rel)
		}
		p := pkgs[ip]
		if p == nil {
			p = &pkg{path: ip, name: f.Name.Name, imports: map[string]bool{}}
			pkgs[ip] = p
		}
		if f.Doc != nil && strings.TrimSpace(f.Doc.Text()) != "" {
			p.doc = true
		}
		for _, imp := range f.Imports {
			s, _ := strconv.Unquote(imp.Path.Value)
			p.imports[s] = true
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(pkgs) == 0 {
		t.Fatal("found no packages")
	}
	return pkgs
}

// deps returns the module-internal packages that p reaches, p included.
func deps(pkgs map[string]*pkg, from string) []string {
	seen := map[string]bool{}
	var walk func(string)
	walk = func(ip string) {
		if seen[ip] {
			return
		}
		seen[ip] = true
		if p := pkgs[ip]; p != nil {
			for imp := range p.imports {
				if strings.HasPrefix(imp, module) {
					walk(imp)
				}
			}
		}
	}
	walk(from)
	out := make([]string, 0, len(seen))
	for ip := range seen {
		out = append(out, ip)
	}
	slices.Sort(out)
	return out
}

func TestPackagesHaveDocs(t *testing.T) {
	for _, p := range loadPackages(t) {
		if !p.doc {
			t.Errorf("package %s has no package doc comment", p.path)
		}
	}
}

// TestProductionCodeDoesNotImportTesting: only test helper packages (named
// ...test, like storetest or transporttest) may import "testing".
func TestProductionCodeDoesNotImportTesting(t *testing.T) {
	for _, p := range loadPackages(t) {
		if p.imports["testing"] && !strings.HasSuffix(p.name, "test") {
			t.Errorf("production package %s imports testing", p.path)
		}
	}
}

// TestSessionImportsNothingOfOurs: the E2E crypto core depends only on the
// standard library and golang.org/x/crypto.
func TestSessionImportsNothingOfOurs(t *testing.T) {
	pkgs := loadPackages(t)
	p := pkgs[module+"/session"]
	if p == nil {
		t.Fatal("no session package")
	}
	for imp := range p.imports {
		if strings.HasPrefix(imp, module) {
			t.Errorf("session imports %s", imp)
		}
		if strings.Contains(strings.Split(imp, "/")[0], ".") && !strings.HasPrefix(imp, "golang.org/x/crypto/") {
			t.Errorf("session imports %s; only the standard library and golang.org/x/crypto are allowed", imp)
		}
	}
}

// TestRelayNeverReachesSession makes "the relay never sees plaintext"
// structural: no package the relay binary is built from reaches the session
// crypto.
func TestRelayNeverReachesSession(t *testing.T) {
	pkgs := loadPackages(t)
	var roots []string
	for ip := range pkgs {
		if ip == module+"/cmd/ferry-relay" || ip == module+"/relay" || strings.HasPrefix(ip, module+"/relay/") {
			roots = append(roots, ip)
		}
	}
	if len(roots) == 0 {
		t.Fatal("found no relay packages")
	}
	for _, r := range roots {
		for _, d := range deps(pkgs, r) {
			if d == module+"/session" || strings.HasPrefix(d, module+"/session/") {
				t.Errorf("%s reaches %s", r, d)
			}
		}
	}
}
