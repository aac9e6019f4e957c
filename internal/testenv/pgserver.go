package testenv

import (
	"context"
	"database/sql"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/dispatchhq/dispatch/internal/platform/postgres"
)

// PGServer is a PostgreSQL cluster of a test's own: initdb'd in a temporary directory, its
// postmaster a child process on a loopback port of its own. Tests that stop, crash or restart
// PostgreSQL use it; the shared server of TEST_DATABASE_URL is never touched.
//
// It uses Debian's server binaries (/usr/lib/postgresql/<version>/bin, the newest) or those of
// PG_BIN_DIR. PostgreSQL refuses to run as root, so under root the cluster belongs to the
// postgres system user and its processes run as that user.
type PGServer struct {
	t    testing.TB
	bin  string
	dir  string // the data directory
	cred *syscall.Credential
	Port int
	proc *Program
}

// StartPGServer creates a cluster (trust authentication, user postgres, fsync off: the
// machine does not crash in a test, only the server does) with a migrated database named
// dispatch, and starts it. The cluster is stopped and deleted when the test ends.
func StartPGServer(t testing.TB) *PGServer {
	t.Helper()
	bin, err := pgBinDir()
	if err != nil {
		t.Fatalf("testenv: %v", err)
	}
	s := &PGServer{t: t, bin: bin, Port: FreePort(t)}
	s.cred, err = pgCredential()
	if err != nil {
		t.Fatalf("testenv: %v", err)
	}
	// Not t.TempDir(): its parents are private to root, and the server may run as postgres.
	root, err := os.MkdirTemp("", "dispatch-pg-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(root) })
	s.dir = filepath.Join(root, "data")
	if err := os.Chmod(root, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(s.dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if s.cred != nil {
		if err := os.Chown(s.dir, int(s.cred.Uid), int(s.cred.Gid)); err != nil {
			t.Fatal(err)
		}
	}
	initdb := exec.Command(filepath.Join(bin, "initdb"), "-D", s.dir, "-U", "postgres", "--auth=trust",
		"-E", "UTF8", "--locale=C", "--no-sync")
	initdb.SysProcAttr = &syscall.SysProcAttr{Credential: s.cred}
	if out, err := initdb.CombinedOutput(); err != nil {
		t.Fatalf("testenv: initdb: %v\n%s", err, out)
	}
	s.Start()
	t.Cleanup(func() { s.Stop(StopImmediate) })
	s.createDatabase("dispatch")
	return s
}

// PGStopMode is how the postmaster is told to stop (PostgreSQL's shutdown modes).
type PGStopMode syscall.Signal

const (
	// StopFast disconnects the clients, rolls their transactions back and writes a checkpoint.
	StopFast = PGStopMode(syscall.SIGINT)
	// StopImmediate quits at once, as a crash would: the next start replays the WAL.
	StopImmediate = PGStopMode(syscall.SIGQUIT)
)

func (m PGStopMode) String() string {
	if m == StopImmediate {
		return "immediate"
	}
	return "fast"
}

// URL is the URL of database name on the server.
func (s *PGServer) URL(name string) string {
	return fmt.Sprintf("postgres://postgres@127.0.0.1:%d/%s?sslmode=disable", s.Port, name)
}

// Start runs the postmaster (again, after Stop) with the same port and data directory and
// waits until it accepts connections.
func (s *PGServer) Start() {
	s.t.Helper()
	cmd := exec.Command(filepath.Join(s.bin, "postgres"), "-D", s.dir, "-p", strconv.Itoa(s.Port),
		"-c", "unix_socket_directories=", "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off",
		"-c", "full_page_writes=off", "-c", "max_connections=300", "-c", "shared_buffers=64MB",
		"-c", "shared_preload_libraries=pg_stat_statements")
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: s.cred}
	s.proc = StartCommand(s.t, "postgres", cmd)
	Eventually(s.t, 60*time.Second, "postgres accepts connections on "+strconv.Itoa(s.Port), func() bool {
		if !s.proc.Running() {
			s.t.Fatalf("postgres exited: %v\n%s", s.proc.Err(), s.proc.Output(4000))
		}
		db, err := sql.Open("postgres", s.URL("postgres"))
		if err != nil {
			return false
		}
		defer db.Close()
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		return db.PingContext(ctx) == nil
	})
}

// Stop stops the postmaster in mode and waits until it and its backends have exited.
func (s *PGServer) Stop(mode PGStopMode) { s.proc.Stop(syscall.Signal(mode)) }

// Restart stops the server in mode and starts it again.
func (s *PGServer) Restart(mode PGStopMode) {
	s.t.Helper()
	s.Stop(mode)
	s.Start()
}

// Running reports whether the postmaster is alive.
func (s *PGServer) Running() bool { return s.proc.Running() }

// Output is the last n bytes of the server's log (of its current run).
func (s *PGServer) Output(n int) string { return s.proc.Output(n) }

// createDatabase creates a database and applies the migrations with the project's migrator.
func (s *PGServer) createDatabase(name string) {
	s.t.Helper()
	ctx := context.Background()
	admin, err := postgres.Open(ctx, s.URL("postgres"), 1)
	if err != nil {
		s.t.Fatal(err)
	}
	defer admin.Close()
	if _, err := admin.Exec(`CREATE DATABASE ` + name); err != nil {
		s.t.Fatalf("testenv: create database %s: %v", name, err)
	}
	m, err := postgres.NewMigrator(ctx, s.URL(name))
	if err != nil {
		s.t.Fatal(err)
	}
	defer m.Close()
	if err := m.Up(); err != nil {
		s.t.Fatalf("testenv: migrate %s: %v", name, err)
	}
}

// pgBinDir is PG_BIN_DIR or the newest /usr/lib/postgresql/<version>/bin holding initdb.
func pgBinDir() (string, error) {
	if d := os.Getenv("PG_BIN_DIR"); d != "" {
		return d, nil
	}
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	sort.Slice(dirs, func(i, j int) bool { return pgVersion(dirs[i]) > pgVersion(dirs[j]) })
	for _, d := range dirs {
		if _, err := os.Stat(filepath.Join(d, "initdb")); err == nil {
			return d, nil
		}
	}
	return "", fmt.Errorf("no PostgreSQL server binaries in /usr/lib/postgresql/*/bin (install postgresql, or set PG_BIN_DIR)")
}

func pgVersion(binDir string) int {
	v, _ := strconv.Atoi(filepath.Base(filepath.Dir(binDir)))
	return v
}

// pgCredential is the postgres system user's when running as root (initdb and the server
// refuse root), nil otherwise.
func pgCredential() (*syscall.Credential, error) {
	if os.Geteuid() != 0 {
		return nil, nil
	}
	u, err := user.Lookup("postgres")
	if err != nil {
		return nil, fmt.Errorf("running as root and no postgres user to run PostgreSQL as: %w", err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}, nil
}
