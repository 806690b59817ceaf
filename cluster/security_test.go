package cluster

import (
	"bytes"
	"context"
	"crypto/tls"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/gbproxy/gbproxy/cluster/etcdtest"
	"github.com/gbproxy/gbproxy/security/testpki"
)

// logBuf collects a node's log lines while its goroutines write.
type logBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuf) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuf) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// openSecured opens node id with TLS and credentials; Open must return
// within a few seconds whatever etcd thinks of them.
func openSecured(t *testing.T, endpoint, id string, tlsCfg *tls.Config, user, password string) (*Cluster, *logBuf) {
	t.Helper()
	logs := &logBuf{}
	start := time.Now()
	c, err := Open(context.Background(), Config{
		Endpoints: []string{endpoint}, NodeID: id, Advertise: "127.0.0.1:5060", TTL: testTTL,
		StartTimeout: time.Second, TLS: tlsCfg, Username: user, Password: password,
	}, zerolog.New(zerolog.MultiLevelWriter(logs, zerolog.NewTestWriter(t))))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	if waited := time.Since(start); waited > 5*time.Second {
		t.Fatalf("Open blocked %s", waited)
	}
	return c, logs
}

func TestJoinOverTLSWithClientCert(t *testing.T) {
	pki := testpki.New(t)
	etcd := etcdtest.StartWith(t, etcdtest.Options{PKI: pki})
	if !strings.HasPrefix(etcd.Endpoint(), "https://") {
		t.Fatalf("endpoint %s", etcd.Endpoint())
	}
	c, _ := openSecured(t, etcd.Endpoint(), "a", pki.ClientConfig(true), "", "")
	syncNode(t, c)
	c.ClaimDevice("d1")
	syncNode(t, c)
	raw := etcd.Client("", "")
	if !c.EtcdUp() || rawGet(t, raw, nodesPrefix+"a") == "" || rawGet(t, raw, devicesPrefix+"d1") != "a" {
		t.Fatalf("up %v; node or claim not in etcd over TLS", c.EtcdUp())
	}
}

func TestTLSRefusedWithoutClientCertOrWithWrongCA(t *testing.T) {
	pki := testpki.New(t)
	etcd := etcdtest.StartWith(t, etcdtest.Options{PKI: pki})
	wrongCA := pki.ClientConfig(true)
	wrongCA.RootCAs = testpki.New(t).Pool()
	raw := etcd.Client("", "")
	for _, tc := range []struct {
		name string
		why  *regexp.Regexp // what the warning must say
		cfg  *tls.Config
	}{
		// etcd built with Go before 1.21 sends "bad certificate".
		{"no client cert", regexp.MustCompile(`bad certificate|certificate required`), pki.ClientConfig(false)},
		{"wrong CA", regexp.MustCompile(`unknown authority`), wrongCA},
		{"plain http", regexp.MustCompile(``), nil},
	} {
		name, cfg := tc.name, tc.cfg
		t.Run(name, func(t *testing.T) {
			ep := etcd.Endpoint()
			if cfg == nil {
				ep = strings.Replace(ep, "https://", "http://", 1)
			}
			id := strings.ReplaceAll(name, " ", "-")
			c, logs := openSecured(t, ep, id, cfg, "", "")
			if c.EtcdUp() {
				t.Fatal("etcd_up true though etcd refused us")
			}
			if l := logs.String(); !strings.Contains(l, "etcd unreachable at start") || !tc.why.MatchString(l) {
				t.Fatalf("no start-up warning saying %q in the log:\n%s", tc.why, l)
			}
			// Given time to join, it still has not.
			eventually(t, 5*time.Second, "connection attempts failing", func() bool { return c.Errors() >= 2 })
			if c.EtcdUp() || rawGet(t, raw, nodesPrefix+id) != "" {
				t.Fatalf("joined though etcd refused us: up %v", c.EtcdUp())
			}
		})
	}
}

func TestAuthPassword(t *testing.T) {
	const user, password, wrong = "gbproxy", "right-pw-7d1f", "wrong-pw-93ac"
	etcd := etcdtest.StartWith(t, etcdtest.Options{User: user, Password: password})
	raw := etcd.Client(user, password)

	good, goodLogs := openSecured(t, etcd.Endpoint(), "a", nil, user, password)
	syncNode(t, good)
	if !good.EtcdUp() || rawGet(t, raw, nodesPrefix+"a") == "" {
		t.Fatalf("up %v; node record not written with the right password", good.EtcdUp())
	}

	bad, badLogs := openSecured(t, etcd.Endpoint(), "b", nil, user, wrong)
	if bad.EtcdUp() {
		t.Fatal("etcd_up true with a wrong password")
	}
	eventually(t, 5*time.Second, "refusal logged", func() bool { return strings.Contains(badLogs.String(), "authentication failed") })
	if rawGet(t, raw, nodesPrefix+"b") != "" || bad.EtcdUp() {
		t.Fatal("joined with a wrong password")
	}
	if names := nodeIDs(good); len(names) != 1 {
		t.Fatalf("the good node sees %v", names)
	}
	for _, l := range []string{goodLogs.String(), badLogs.String()} {
		if strings.Contains(l, password) || strings.Contains(l, wrong) {
			t.Fatalf("a password is in the log:\n%s", l)
		}
	}
}

func TestUsernameWithoutPasswordRefused(t *testing.T) {
	_, err := Open(context.Background(), Config{Endpoints: []string{"127.0.0.1:2379"}, NodeID: "a", Advertise: "127.0.0.1:5060", Username: "u"}, zerolog.Nop())
	if err == nil || !strings.Contains(err.Error(), "username and password") {
		t.Fatalf("err %v", err)
	}
}
