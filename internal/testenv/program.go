package testenv

import (
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// Program is a built program a test runs as a child process.
type Program struct {
	t     testing.TB
	name  string
	cmd   *exec.Cmd
	out   *Buffer
	done  chan struct{}
	err   error
	quiet atomic.Bool
}

// StartProgram runs bin with exactly env and args. The process is killed when the test ends
// (or when the test binary dies), and its output is logged if the test failed.
func StartProgram(t testing.TB, name, bin string, env []string, args ...string) *Program {
	t.Helper()
	cmd := exec.Command(bin, args...)
	cmd.Env = env
	return StartCommand(t, name, cmd)
}

// StartCommand runs a prepared command (its own working directory or credentials) like
// StartProgram: output captured, killed with the test or with the test binary.
func StartCommand(t testing.TB, name string, cmd *exec.Cmd) *Program {
	t.Helper()
	out := &Buffer{}
	cmd.Stdout, cmd.Stderr = out, out
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	// Go sets the parent-death signal after switching credentials, so it holds for those too.
	cmd.SysProcAttr.Pdeathsig = syscall.SIGKILL
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	p := &Program{t: t, name: name, cmd: cmd, out: out, done: make(chan struct{})}
	go func() { p.err = cmd.Wait(); close(p.done) }()
	t.Cleanup(func() {
		p.Kill()
		if t.Failed() && !p.quiet.Load() {
			t.Logf("--- output of %s (pid %d) ---\n%s", name, cmd.Process.Pid, p.Output(8000))
		}
	})
	return p
}

// Quiet keeps the output out of the test log when the test fails: for a test that starts a
// program many times and keeps the output itself.
func (p *Program) Quiet() { p.quiet.Store(true) }

// Pid is the process id.
func (p *Program) Pid() int { return p.cmd.Process.Pid }

// Done is closed when the process has exited; Err then tells how.
func (p *Program) Done() <-chan struct{} { return p.done }

// Err is the process's exit error, once Done is closed.
func (p *Program) Err() error { return p.err }

// Output returns the last n bytes the process wrote to stdout and stderr.
func (p *Program) Output(n int) string {
	s := p.out.String()
	if len(s) > n {
		return "…" + s[len(s)-n:]
	}
	return s
}

// Running reports whether the process has not exited.
func (p *Program) Running() bool {
	select {
	case <-p.done:
		return false
	default:
		return true
	}
}

// Kill sends SIGKILL and waits for the process to end.
func (p *Program) Kill() {
	if p.Running() {
		_ = p.cmd.Process.Kill()
	}
	<-p.done
}

// Stop sends sig (SIGTERM, SIGINT, SIGQUIT… as the program defines them) and waits for the
// process to end.
func (p *Program) Stop(sig syscall.Signal) {
	if p.Running() {
		_ = p.cmd.Process.Signal(sig)
	}
	<-p.done
}

// WaitReady waits until GET http://addr/ready answers 200, failing the test if the process
// exits first.
func (p *Program) WaitReady(addr string) {
	p.t.Helper()
	Eventually(p.t, 60*time.Second, p.name+" ready on "+addr, func() bool {
		if !p.Running() {
			p.t.Fatalf("%s exited: %v\n%s", p.name, p.err, p.Output(4000))
		}
		resp, err := http.Get("http://" + addr + "/ready")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
}

// BuildCommands builds ./cmd/<name> for each name with one go build (the links run in
// parallel) into a temporary directory, without debug information (the binaries are only
// run), and returns the binaries by name.
func BuildCommands(t testing.TB, names ...string) map[string]string {
	t.Helper()
	dir := t.TempDir()
	args := []string{"build", "-ldflags=-s -w", "-o", dir + string(os.PathSeparator)}
	for _, n := range names {
		args = append(args, "github.com/dispatchhq/dispatch/cmd/"+n)
	}
	if out, err := exec.Command("go", args...).CombinedOutput(); err != nil {
		t.Fatalf("go %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	bins := map[string]string{}
	for _, n := range names {
		bins[n] = filepath.Join(dir, n)
	}
	return bins
}
