package testenv

import (
	"io"
	"os"
	"os/exec"
	"syscall"
	"time"

	"github.com/ory/dockertest/v3"
)

// The watcher is the test binary itself, run again with watcherEnv set: this package's init
// sees the variable and, instead of running tests, waits for its owner to exit and removes the
// owner's containers. Its stdin is a pipe whose only write end stays open in the owner, so it
// reads EOF the moment the owner ends, whether it returned, panicked or was killed. Re-running
// the test binary needs no other program, image or TestMain.
const watcherEnv = "DISPATCH_TESTENV_WATCH"

func init() {
	if owner := os.Getenv(watcherEnv); owner != "" {
		watch(owner)
		os.Exit(0)
	}
}

// startWatcher starts the watcher of owner's containers.
func startWatcher(owner string) error {
	exe, err := os.Executable()
	if err != nil {
		return err
	}
	// The write end stays a bare descriptor, never closed: no finalizer can close it early,
	// and close-on-exec keeps it from the other programs this process starts.
	var fds [2]int
	if err := syscall.Pipe2(fds[:], syscall.O_CLOEXEC); err != nil {
		return err
	}
	r := os.NewFile(uintptr(fds[0]), "watcher-stdin")
	defer r.Close()
	cmd := exec.Command(exe)
	cmd.Env = append(os.Environ(), watcherEnv+"="+owner)
	cmd.Stdin = r
	// No stdout or stderr: `go test` waits for every holder of the test binary's output to
	// close it. A session of its own: Ctrl-C in the terminal must not stop the cleanup.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		_ = syscall.Close(fds[1])
		return err
	}
	return cmd.Process.Release()
}

// watch waits for the owner to end, then removes its containers, twice: a container the
// owner asked for just before it died may appear a moment later.
func watch(owner string) {
	_, _ = io.Copy(io.Discard, os.Stdin)
	pool, err := dockertest.NewPool("")
	if err != nil {
		return
	}
	removeOwned(pool, owner)
	time.Sleep(2 * time.Second)
	removeOwned(pool, owner)
}
