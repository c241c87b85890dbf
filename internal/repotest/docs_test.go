package repotest

import (
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// repoFiles returns the paths (slash-separated, relative to the module
// root) of the files of the repository, leaving out .git.
func repoFiles(t *testing.T) (root string, files []string) {
	t.Helper()
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	err = filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && strings.HasPrefix(d.Name(), ".") && path != root {
			return filepath.SkipDir
		}
		if !d.IsDir() {
			rel, _ := filepath.Rel(root, path)
			files = append(files, filepath.ToSlash(rel))
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return root, files
}

// outside matches a reference to a file outside the repository: an
// absolute path of the machines the project was built on, or the shared
// folder of notes it started from.
var outside = regexp.MustCompile(`(^|[\s("'\x60])(/work/|/home/|/root/|shared/[a-z]+\.md|shared/vectors)`)

// fileRef matches a backticked file name in a document.
var fileRef = regexp.MustCompile("`([A-Za-z0-9_./-]+\\.(?:go|md|json|txt|bin|jsonl))`")

// TestDocsStayInRepo: the documents, Go files and test data cite no file
// outside the repository, and every file of the repository a document
// names in backticks (a path that starts at one of its top-level
// directories) exists.
func TestDocsStayInRepo(t *testing.T) {
	root, files := repoFiles(t)
	for _, f := range files {
		ext := filepath.Ext(f)
		if ext != ".md" && ext != ".go" && ext != ".json" {
			continue
		}
		b, err := os.ReadFile(filepath.Join(root, f))
		if err != nil {
			t.Fatal(err)
		}
		for i, line := range strings.Split(string(b), "\n") {
			if m := outside.FindString(line); m != "" && !strings.HasSuffix(f, "docs_test.go") {
				t.Errorf("%s:%d cites %q, outside the repository", f, i+1, strings.TrimSpace(m))
			}
			if ext != ".md" {
				continue
			}
			for _, ref := range fileRef.FindAllStringSubmatch(line, -1) {
				if top, _, ok := strings.Cut(strings.TrimPrefix(ref[1], "./"), "/"); ok && isTop(root, top) && !exists(files, ref[1]) {
					t.Errorf("%s:%d names %s, which is not in the repository", f, i+1, ref[1])
				}
			}
		}
	}
}

// isTop reports whether name is a top-level directory of the repository.
func isTop(root, name string) bool {
	fi, err := os.Stat(filepath.Join(root, name))
	return err == nil && fi.IsDir()
}

// exists reports whether name is a file of the repository or the end of
// one's path.
func exists(files []string, name string) bool {
	name = strings.TrimPrefix(name, "./")
	for _, f := range files {
		if f == name || strings.HasSuffix(f, "/"+name) {
			return true
		}
	}
	return false
}
