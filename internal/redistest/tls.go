package redistest

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"
	"github.com/refcast/refcast/internal/proc"
)

// CA is a throwaway certificate authority and one server certificate it
// signed for 127.0.0.1, ::1 and localhost, all ECDSA P-256 and valid for a
// day, written as PEM files in a t.TempDir().
type CA struct {
	// CAFile is the CA certificate (what a client trusts).
	CAFile string
	// CertFile and KeyFile are the server's certificate and private key.
	CertFile, KeyFile string
	// Pool holds the CA certificate.
	Pool *x509.CertPool
}

// NewCA generates a CA and a server certificate. It fails the test on
// error.
func NewCA(t testing.TB) *CA {
	t.Helper()
	ca, err := newCA(t.TempDir())
	if err != nil {
		t.Fatalf("redistest: generate certificates: %v", err)
	}
	return ca
}

func newCA(dir string) (*CA, error) {
	now := time.Now()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	caTmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "redistest CA"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		return nil, err
	}
	caCert, err := x509.ParseCertificate(caDER)
	if err != nil {
		return nil, err
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2),
		Subject:      pkix.Name{CommonName: "redistest server"},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback},
		DNSNames:     []string{"localhost"},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, &key.PublicKey, caKey)
	if err != nil {
		return nil, err
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return nil, err
	}
	ca := &CA{
		CAFile:   filepath.Join(dir, "ca.pem"),
		CertFile: filepath.Join(dir, "server.pem"),
		KeyFile:  filepath.Join(dir, "server-key.pem"),
		Pool:     x509.NewCertPool(),
	}
	ca.Pool.AddCert(caCert)
	for _, f := range []struct {
		path, typ string
		der       []byte
	}{{ca.CAFile, "CERTIFICATE", caDER}, {ca.CertFile, "CERTIFICATE", der}, {ca.KeyFile, "EC PRIVATE KEY", keyDER}} {
		if err := os.WriteFile(f.path, pem.EncodeToMemory(&pem.Block{Type: f.typ, Bytes: f.der}), 0o600); err != nil {
			return nil, err
		}
	}
	return ca, nil
}

// TLSServer is a redis-server that listens only for TLS (port 0,
// tls-port), with a certificate from a CA, and does not ask clients for
// certificates (tls-auth-clients no).
type TLSServer struct {
	// CA signed the server's certificate.
	CA   *CA
	port int    // set at construction
	dir  string // set at construction

	mu   sync.Mutex    // guards cmd and done
	cmd  *exec.Cmd     // nil when not running
	done chan struct{} // closed when cmd has exited
}

// StartTLS starts a TLS-only redis-server on a free port of 127.0.0.1 with
// a fresh CA, waits until it answers PING over verified TLS, and kills it in
// t.Cleanup. args are extra configuration lines. It skips the test (fails
// under CI=true) when redis-server is missing or was built without TLS.
func StartTLS(t testing.TB, args ...string) *TLSServer {
	t.Helper()
	requireBinary(t, "redis-server")
	ca := NewCA(t)
	var lastErr error
	for range 5 { // a free port can be taken between probe and bind: retry
		s := &TLSServer{CA: ca, port: freePort(t, false), dir: t.TempDir()}
		if lastErr = s.start(args); lastErr == nil {
			t.Cleanup(s.Kill)
			return s
		}
		// Debian's and the upstream default builds have TLS; a build
		// without it rejects the tls-* directives.
		if msg := lastErr.Error(); strings.Contains(msg, "not compiled") || strings.Contains(msg, "Bad directive") {
			msg := fmt.Sprintf("redistest: redis-server lacks TLS support (BUILD_TLS=yes); TLS TESTS NOT RUN: %v", lastErr)
			if os.Getenv("CI") == "true" {
				t.Fatal(msg)
			}
			t.Skip(msg)
		}
	}
	t.Fatalf("redistest: start TLS redis-server: %v", lastErr)
	return nil
}

func (s *TLSServer) start(args []string) error {
	var b strings.Builder
	fmt.Fprintf(&b, "port 0\ntls-port %d\nbind 127.0.0.1\ndir %s\ndaemonize no\nprotected-mode no\n", s.port, s.dir)
	fmt.Fprintf(&b, "logfile %s\nsave \"\"\nappendonly no\n", filepath.Join(s.dir, "redis.log"))
	fmt.Fprintf(&b, "tls-cert-file %s\ntls-key-file %s\ntls-ca-cert-file %s\ntls-auth-clients no\n", s.CA.CertFile, s.CA.KeyFile, s.CA.CAFile)
	for _, a := range args {
		b.WriteString(a + "\n")
	}
	conf := filepath.Join(s.dir, "redis.conf")
	if err := os.WriteFile(conf, []byte(b.String()), 0o600); err != nil {
		return err
	}
	cmd := exec.Command("redis-server", conf)
	proc.DieWithParent(cmd)
	var out strings.Builder // configuration errors, printed before the log file opens
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		return err
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	s.mu.Lock()
	s.cmd, s.done = cmd, done
	s.mu.Unlock()
	if err := s.waitReady(10*time.Second, done); err != nil {
		s.Kill()
		log, _ := os.ReadFile(filepath.Join(s.dir, "redis.log"))
		return fmt.Errorf("%w; output:\n%s\nlog:\n%s", err, tail(out.String(), 2000), tail(string(log), 2000))
	}
	return nil
}

func (s *TLSServer) waitReady(d time.Duration, exited <-chan struct{}) error {
	c := goredis.NewClient(&goredis.Options{Addr: s.Addr(), TLSConfig: s.ClientTLS(), MaxRetries: -1, DialTimeout: time.Second})
	defer c.Close()
	deadline := time.Now().Add(d)
	var err error
	for time.Now().Before(deadline) {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		err = c.Ping(ctx).Err()
		cancel()
		if err == nil {
			return nil
		}
		select {
		case <-exited:
			return fmt.Errorf("redis-server exited: %w", err)
		case <-time.After(20 * time.Millisecond):
		}
	}
	return fmt.Errorf("TLS redis-server on %s not ready after %v: %w", s.Addr(), d, err)
}

// Addr is the server's TLS host:port.
func (s *TLSServer) Addr() string { return "127.0.0.1:" + strconv.Itoa(s.port) }

// URL is rediss://127.0.0.1:port?tls_ca_file=CA, the form bus/redis.Open
// takes to verify the server against the test CA.
func (s *TLSServer) URL() string {
	return "rediss://" + s.Addr() + "?tls_ca_file=" + url.QueryEscape(s.CA.CAFile)
}

// ClientTLS is a client configuration that trusts the server's CA.
func (s *TLSServer) ClientTLS() *tls.Config {
	return &tls.Config{RootCAs: s.CA.Pool, MinVersion: tls.VersionTLS12}
}

// Kill kills the server (SIGKILL) and waits for it. No-op when not running.
func (s *TLSServer) Kill() {
	s.mu.Lock()
	cmd, done := s.cmd, s.done
	s.cmd = nil
	s.mu.Unlock()
	if cmd == nil {
		return
	}
	_ = cmd.Process.Kill()
	<-done
}
