package relay

import (
	"errors"
	"net"
	"net/netip"
	"slices"
	"strings"
	"testing"
)

func TestPortPool(t *testing.T) {
	ok := func(int) error { return nil }
	p := newPortPool(netip.MustParseAddr(loopback), 20001, 20009) // even ports 20002..20008
	var got []int
	for i := 0; i < 4; i++ {
		port, err := p.alloc(ok)
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, port)
	}
	if want := []int{20002, 20004, 20006, 20008}; !slices.Equal(got, want) {
		t.Fatalf("allocated %v, want %v", got, want)
	}
	if _, err := p.alloc(ok); err == nil || !strings.Contains(err.Error(), "in use") {
		t.Fatalf("exhausted pool: err %v", err)
	}
	p.free(20004)
	if port, err := p.alloc(ok); err != nil || port != 20004 {
		t.Fatalf("after free: %d, %v; want the freed 20004", port, err)
	}

	// A port another program holds is skipped, not handed out.
	q := newPortPool(netip.MustParseAddr(loopback), 20000, 20010)
	busy := errors.New("address already in use")
	port, err := q.alloc(func(p int) error {
		if p == 20000 {
			return busy
		}
		return nil
	})
	if err != nil || port != 20002 {
		t.Fatalf("skip busy: %d, %v", port, err)
	}
	if _, err := q.alloc(func(int) error { return busy }); !errors.Is(err, busy) {
		t.Fatalf("all binds failing: err %v, want the bind error", err)
	}
	if q.inUse() != 1 {
		t.Fatalf("inUse = %d, want 1", q.inUse())
	}
}

func TestPoolsPerBindIP(t *testing.T) {
	r := newTestRelay(t, func(c *Config) { c.PortMin, c.PortMax = 20100, 20102 })
	lower := r.pool(netip.MustParseAddr(loopback))
	upper := r.pool(netip.MustParseAddr("192.0.2.10")) // another zone's IP: only its pool is used
	for _, p := range []*portPool{lower, upper} {
		for i := 0; i < 2; i++ {
			if _, err := p.alloc(func(int) error { return nil }); err != nil {
				t.Fatalf("pool %s: %v", p.ip, err)
			}
		}
	}
	if r.PortsInUse() != 4 {
		t.Fatalf("PortsInUse = %d, want 2 per IP", r.PortsInUse())
	}
}

func TestRelayAllocatesEvenFreePorts(t *testing.T) {
	// Hold the first even port of the range so that the relay must skip it.
	held, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 20200})
	if err != nil {
		t.Skipf("port 20200 not free for the test: %v", err)
	}
	defer held.Close()
	r := newTestRelay(t, func(c *Config) { c.PortMin, c.PortMax = 20200, 20210 })
	seen := map[uint16]bool{}
	for i := 0; i < 3; i++ {
		s, err := r.NewSource(loopback, UDP, SourceOptions{})
		if err != nil {
			t.Fatal(err)
		}
		port := s.LocalAddr().Port()
		if port%2 != 0 || port == 20200 || seen[port] || port > 20210 {
			t.Fatalf("allocated port %d (seen %v)", port, seen)
		}
		seen[port] = true
	}
}

func TestConfigValidation(t *testing.T) {
	for name, c := range map[string]Config{
		"reversed range":  {PortMin: 30000, PortMax: 20000},
		"no even port":    {PortMin: 20001, PortMax: 20001},
		"port zero":       {PortMin: 0, PortMax: 100},
		"payload too big": {PortMin: 20000, PortMax: 20010, MaxUDPPayload: 70000},
		"payload tiny":    {PortMin: 20000, PortMax: 20010, MaxUDPPayload: 100},
		"negative idle":   {PortMin: 20000, PortMax: 20010, IdleTimeout: -1},
	} {
		if _, err := New(c); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	r, err := New(Config{PortMin: 20000, PortMax: 20010})
	if err != nil {
		t.Fatal(err)
	}
	if r.cfg.MaxUDPPayload != 1472 || r.cfg.ConnectTimeout <= 0 || r.cfg.RelatchAfter <= 0 {
		t.Errorf("defaults not applied: %+v", r.cfg)
	}
}
