package deploycheck_test

import (
	"bytes"
	"debug/elf"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
)

// instruction is one Dockerfile instruction, continuation lines joined.
type instruction struct {
	cmd  string // upper case: FROM, RUN, COPY…
	args string
	line int
}

// parseDockerfile splits a Dockerfile into instructions: comments and blank lines dropped,
// backslash continuations joined. That is all the syntax the checks below need.
func parseDockerfile(t testing.TB, src string) []instruction {
	t.Helper()
	var out []instruction
	var cur strings.Builder
	start := 0
	for i, raw := range strings.Split(src, "\n") {
		line := strings.TrimSpace(raw)
		if cur.Len() == 0 && (line == "" || strings.HasPrefix(line, "#")) {
			continue
		}
		if cur.Len() == 0 {
			start = i + 1
		} else if strings.HasPrefix(line, "#") {
			continue // a comment inside a continued instruction
		}
		if strings.HasSuffix(line, "\\") {
			cur.WriteString(strings.TrimSuffix(line, "\\") + " ")
			continue
		}
		cur.WriteString(line)
		cmd, args, _ := strings.Cut(cur.String(), " ")
		out = append(out, instruction{cmd: strings.ToUpper(cmd), args: strings.TrimSpace(args), line: start})
		cur.Reset()
	}
	if cur.Len() != 0 {
		t.Fatalf("Dockerfile ends inside a continued instruction")
	}
	return out
}

// stage is one FROM … AS … block.
type stage struct {
	image, name string
	body        []instruction
}

func dockerStages(t testing.TB) (args map[string]string, stages []stage) {
	t.Helper()
	args = map[string]string{}
	for _, in := range parseDockerfile(t, string(readFile(t, "Dockerfile"))) {
		switch {
		case in.cmd == "ARG" && len(stages) == 0:
			k, v, _ := strings.Cut(in.args, "=")
			args[k] = v
		case in.cmd == "FROM":
			f := strings.Fields(in.args)
			s := stage{image: os.Expand(f[0], func(k string) string { return args[k] })}
			if len(f) == 3 && strings.EqualFold(f[1], "AS") {
				s.name = f[2]
			}
			stages = append(stages, s)
		case len(stages) == 0:
			t.Fatalf("Dockerfile line %d: %s before the first FROM", in.line, in.cmd)
		default:
			stages[len(stages)-1].body = append(stages[len(stages)-1].body, in)
		}
	}
	return args, stages
}

// cmdPrograms lists the programs of ./cmd (directories with a main package).
func cmdPrograms(t testing.TB) map[string]bool {
	t.Helper()
	entries, err := os.ReadDir(path("cmd"))
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]bool{}
	for _, e := range entries {
		if b, err := os.ReadFile(filepath.Join(path("cmd"), e.Name(), "main.go")); err == nil && bytes.Contains(b, []byte("package main")) {
			out[e.Name()] = true
		}
	}
	if len(out) == 0 {
		t.Fatal("no program under ./cmd")
	}
	return out
}

// goBuildRun finds a `go build` command in a RUN instruction, after its --mount flags or a
// previous command.
var goBuildRun = regexp.MustCompile(`^(?:--\S+\s+)*(?:.*(?:&&|;)\s*)?(go build .*)$`)

// buildCommand returns the build stage's `go build …` command and its ENV.
func buildCommand(t testing.TB) (cmd string, env []string) {
	t.Helper()
	_, stages := dockerStages(t)
	for _, in := range stages[0].body {
		switch in.cmd {
		case "ENV":
			env = append(env, strings.Fields(in.args)...)
		case "RUN":
			if m := goBuildRun.FindStringSubmatch(in.args); m != nil {
				cmd = m[1]
			}
		}
	}
	if cmd == "" {
		t.Fatal("the build stage runs no `go build`")
	}
	return cmd, env
}

func TestDockerfileStages(t *testing.T) {
	// A `# syntax=` directive makes BuildKit pull its frontend image first; the frontend
	// built into BuildKit reads this file, and machines without a registry can build it.
	if regexp.MustCompile(`(?im)^#\s*syntax\s*=`).Match(readFile(t, "Dockerfile")) {
		t.Error("Dockerfile has a # syntax= directive: building would pull docker/dockerfile")
	}
	args, stages := dockerStages(t)
	if len(stages) != 2 {
		t.Fatalf("%d stages, want 2 (build, runtime)", len(stages))
	}
	build, runtime := stages[0], stages[1]
	if !strings.HasPrefix(build.image, "golang:1.26") || build.name == "" {
		t.Errorf("build stage FROM %q AS %q, want golang:1.26 AS <name>", build.image, build.name)
	}
	goMod := string(readFile(t, "go.mod"))
	if m := regexp.MustCompile(`(?m)^go (\d+\.\d+)`).FindStringSubmatch(goMod); m == nil || args["GO_VERSION"] != m[1] {
		t.Errorf("GO_VERSION %q does not match go.mod's go directive %v", args["GO_VERSION"], m)
	}
	if !strings.HasPrefix(runtime.image, "alpine:") && !strings.HasPrefix(runtime.image, "gcr.io/distroless/static") {
		t.Errorf("runtime stage FROM %q, want alpine or distroless static", runtime.image)
	}

	cmd, env := buildCommand(t)
	for _, want := range []string{"-trimpath", `-ldflags="-s -w"`} {
		if !strings.Contains(cmd, want) {
			t.Errorf("go build without %s: %s", want, cmd)
		}
	}
	if !slices.Contains(env, "CGO_ENABLED=0") {
		t.Errorf("build stage ENV %v lacks CGO_ENABLED=0", env)
	}

	var user, command string
	var copied, exposed []string
	for _, in := range runtime.body {
		switch in.cmd {
		case "USER":
			user = in.args
		case "CMD":
			command = in.args
		case "COPY":
			if strings.Contains(in.args, "--from="+build.name) {
				copied = append(copied, in.args)
			}
		case "EXPOSE":
			exposed = append(exposed, strings.Fields(in.args)...)
		case "ENTRYPOINT":
			t.Errorf("runtime ENTRYPOINT %s: the command alone must pick the program", in.args)
		}
	}
	name, _, _ := strings.Cut(user, ":")
	if name == "" || name == "root" || name == "0" {
		t.Errorf("runtime USER %q: want a non-root user", user)
	}
	if command != `["/app/api"]` {
		t.Errorf("CMD %s, want [\"/app/api\"]", command)
	}
	if !slices.Equal(copied, []string{"--from=" + build.name + " /out/ /app/"}) {
		t.Errorf("runtime copies %q from the build stage, want its /out/ into /app/", copied)
	}
	sort.Strings(exposed)
	if !slices.Equal(exposed, []string{"8080", "9101", "9102"}) {
		t.Errorf("EXPOSE %v, want 8080 9101 9102", exposed)
	}
	if !strings.Contains(cmd, "-o /out/ ") {
		t.Errorf("go build does not write into /out/: %s", cmd)
	}

	// The build context keeps what the build reads: sources, embedded SQL and OpenAPI.
	for _, line := range strings.Split(string(readFile(t, ".dockerignore")), "\n") {
		pattern := strings.TrimSuffix(strings.TrimSpace(line), "/")
		if pattern == "" || strings.HasPrefix(pattern, "#") || strings.HasPrefix(pattern, "!") {
			continue
		}
		for _, needed := range []string{"go.mod", "go.sum", "cmd", "internal", "pkg", "sql", "api"} {
			if ok, _ := filepath.Match(pattern, needed); ok {
				t.Errorf(".dockerignore pattern %q leaves %s out of the build context", line, needed)
			}
		}
	}
}

// TestDockerfileBuild runs the Dockerfile's own build command and checks what it produces:
// one binary per program of ./cmd, statically linked, stripped, without local paths.
func TestDockerfileBuild(t *testing.T) {
	dir := dockerBuild(t)
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var got, want []string
	for _, e := range entries {
		got = append(got, e.Name())
	}
	for p := range cmdPrograms(t) {
		want = append(want, p)
	}
	sort.Strings(got)
	sort.Strings(want)
	if !slices.Equal(got, want) {
		t.Fatalf("the Dockerfile builds %v, want every program of ./cmd %v", got, want)
	}
	for _, name := range got {
		bin := filepath.Join(dir, name)
		f, err := elf.Open(bin)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		for _, p := range f.Progs {
			if p.Type == elf.PT_INTERP {
				t.Errorf("%s is dynamically linked: it would not run on a static base image", name)
			}
		}
		if f.Section(".symtab") != nil {
			t.Errorf("%s keeps its symbol table (-ldflags -s)", name)
		}
		f.Close()
		b, err := os.ReadFile(bin)
		if err != nil {
			t.Fatal(err)
		}
		if bytes.Contains(b, []byte(root+"/internal")) {
			t.Errorf("%s contains the build machine's path %s (-trimpath)", name, root)
		}
	}
}

var (
	buildOnce sync.Once
	buildDir  string
	buildErr  error
	buildOut  []byte
)

// dockerBuild runs the Dockerfile's `go build` (with its ENV) in the repository, writing to a
// temporary directory instead of /out/, once per test process. Its binaries are the programs
// the metrics test runs.
func dockerBuild(t testing.TB) string {
	t.Helper()
	cmdline, env := buildCommand(t)
	buildOnce.Do(func() {
		buildDir, buildErr = os.MkdirTemp("", "dispatch-image-")
		if buildErr != nil {
			return
		}
		c := exec.Command("sh", "-c", strings.Replace(cmdline, "-o /out/ ", "-o "+buildDir+"/ ", 1))
		c.Dir = root
		c.Env = append(os.Environ(), env...)
		buildOut, buildErr = c.CombinedOutput()
	})
	if buildErr != nil {
		t.Fatalf("%s: %v\n%s", cmdline, buildErr, buildOut)
	}
	return buildDir
}
