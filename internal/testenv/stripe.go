package testenv

import (
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"
)

var (
	stripeOnce sync.Once
	stripeURL  string
	stripeErr  error
)

// StripeURL returns the base URL of a stripe-mock: TEST_STRIPE_URL, else one started from the
// stripe-mock binary (killed with the test process) unless TEST_DOCKER=1, else a container.
func StripeURL(t testing.TB) string {
	t.Helper()
	stripeOnce.Do(func() {
		if stripeURL = os.Getenv("TEST_STRIPE_URL"); stripeURL != "" {
			return
		}
		if bin := stripeMockBinary(); bin != "" && !dockerWanted() {
			stripeURL, stripeErr = startStripeMock(bin)
			return
		}
		d, err := docker()
		if err != nil {
			stripeErr = fmt.Errorf(howTo+"\n(docker: %v)", "stripe-mock", "TEST_STRIPE_URL", "http://127.0.0.1:12111", err)
			return
		}
		stripeURL, stripeErr = d.stripeMock()
	})
	if stripeErr != nil {
		t.Fatal(stripeErr)
	}
	return stripeURL
}

func stripeMockBinary() string {
	if p, err := exec.LookPath("stripe-mock"); err == nil {
		return p
	}
	gopath := os.Getenv("GOPATH")
	if gopath == "" {
		home, _ := os.UserHomeDir()
		gopath = filepath.Join(home, "go")
	}
	p := filepath.Join(gopath, "bin", "stripe-mock")
	if _, err := os.Stat(p); err == nil {
		return p
	}
	return ""
}

// startStripeMock starts stripe-mock on free ports. A start that exits at once (a port taken
// between the check and the bind) is tried again on other ports; what it said is in the error.
func startStripeMock(bin string) (string, error) {
	var err error
	for range 3 {
		var url string
		if url, err = startStripeMockOnce(bin); err == nil {
			return url, nil
		}
	}
	return "", err
}

func startStripeMockOnce(bin string) (string, error) {
	port, err := freePort()
	if err != nil {
		return "", err
	}
	httpsPort, err := freePort()
	if err != nil {
		return "", err
	}
	out := &head{max: 4096}
	cmd := exec.Command(bin, "-http-port", strconv.Itoa(port), "-https-port", strconv.Itoa(httpsPort))
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return "", fmt.Errorf("start stripe-mock: %w", err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	url := "http://127.0.0.1:" + strconv.Itoa(port)
	deadline := time.After(60 * time.Second) // it reads Stripe's whole API description first
	for {
		if probeStripe(url) == nil {
			return url, nil
		}
		select {
		case err := <-exited:
			return "", fmt.Errorf("stripe-mock on %s exited (%v): %s", url, err, out.String())
		case <-deadline:
			_ = cmd.Process.Kill()
			return "", fmt.Errorf("stripe-mock did not answer on %s within a minute: %s", url, out.String())
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// head keeps the first max bytes written to it: what a program said at its start, not every
// request it logs after.
type head struct {
	mu  sync.Mutex
	b   []byte
	max int
}

func (h *head) Write(p []byte) (int, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.b = append(h.b, p[:min(len(p), max(h.max-len(h.b), 0))]...)
	return len(p), nil
}

func (h *head) String() string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return string(h.b)
}

func probeStripe(url string) error {
	req, _ := http.NewRequest(http.MethodGet, url+"/v1/customers", nil)
	req.Header.Set("Authorization", "Bearer sk_test_123")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	resp.Body.Close()
	return nil
}

// FreePort returns a TCP port free at the time of the call.
func FreePort(t testing.TB) int {
	p, err := freePort()
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}
