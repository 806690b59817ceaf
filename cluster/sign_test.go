package cluster

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"
	"github.com/rs/zerolog"

	"github.com/gbproxy/gbproxy/cluster/etcdtest"
)

func openWithUpper(t *testing.T, endpoint, id, upper string) *Cluster {
	t.Helper()
	c, err := Open(context.Background(), Config{
		Endpoints: []string{endpoint}, NodeID: id, Advertise: "127.0.0.1:5060", Upper: upper, TTL: testTTL,
	}, zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.InfoLevel))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	syncNode(t, c)
	return c
}

func internalMessage(source, branch string) *sip.Request {
	req := sip.NewRequest(sip.MESSAGE, sip.Uri{Scheme: "sip", User: "34020000001320000001", Host: "127.0.0.1", Port: 5070})
	via := &sip.ViaHeader{ProtocolName: "SIP", ProtocolVersion: "2.0", Transport: "UDP", Host: "127.0.0.2", Port: 5070, Params: sip.NewParams()}
	via.Params.Add("branch", branch)
	req.AppendHeader(via)
	from := &sip.FromHeader{Address: sip.Uri{Scheme: "sip", User: "34020000002000000001", Host: "3402000000"}, Params: sip.NewParams()}
	from.Params.Add("tag", "abc")
	req.AppendHeader(from)
	req.AppendHeader(&sip.ToHeader{Address: sip.Uri{Scheme: "sip", User: "34020000001320000001", Host: "3402000000"}, Params: sip.NewParams()})
	cid := sip.CallIDHeader("call-1")
	req.AppendHeader(&cid)
	req.AppendHeader(&sip.CSeqHeader{SeqNo: 1, MethodName: sip.MESSAGE})
	req.SetBody([]byte("<Query/>"))
	req.SetSource(source)
	return req
}

// Only a live member's upper host with the shared secret gets through, once
// per Via branch.
func TestSignVerify(t *testing.T) {
	etcd := etcdtest.Start(t)
	a := openWithUpper(t, etcd.Endpoint(), "a", "127.0.0.2:5070")
	b := openWithUpper(t, etcd.Endpoint(), "b", "127.0.0.3:5070")
	eventually(t, 5*time.Second, "b sees a", func() bool { return b.IsMemberUpper("127.0.0.2:5070") })

	req := internalMessage("127.0.0.2:5070", "z9hG4bK-1")
	if _, err := b.Verify(req); !errors.Is(err, ErrUnsigned) {
		t.Fatalf("unsigned: %v, want ErrUnsigned", err)
	}
	if err := a.Sign(req); err != nil {
		t.Fatal(err)
	}
	if node, err := b.Verify(req); err != nil || node != "a" {
		t.Fatalf("signed by a: node %q, %v", node, err)
	}
	if _, err := b.Verify(req); err != nil {
		t.Fatalf("retransmission under the same branch refused: %v", err)
	}
	replay := internalMessage("127.0.0.2:5070", "z9hG4bK-2")
	replay.AppendHeader(req.GetHeader(SignatureHeader))
	if _, err := b.Verify(replay); !errors.Is(err, ErrReplay) {
		t.Fatalf("replay under another branch: %v, want ErrReplay", err)
	}

	forged := internalMessage("127.0.0.2:5070", "z9hG4bK-3")
	if err := a.Sign(forged); err != nil {
		t.Fatal(err)
	}
	forged.SetBody([]byte("<Control/>")) // changed after signing
	if _, err := b.Verify(forged); !errors.Is(err, ErrBadSig) {
		t.Fatalf("tampered body: %v, want ErrBadSig", err)
	}
	toUpper := internalMessage("127.0.0.2:5070", "z9hG4bK-6")
	toUpper.AppendHeader(sip.NewHeader(ToUpperHeader, "34020000002000000001"))
	if err := a.Sign(toUpper); err != nil {
		t.Fatal(err)
	}
	if SignedBy(toUpper) != "a" {
		t.Fatalf("SignedBy: %q, want a", SignedBy(toUpper))
	}
	toUpper.ReplaceHeader(sip.NewHeader(ToUpperHeader, "34020000002000000002")) // another platform
	if _, err := b.Verify(toUpper); !errors.Is(err, ErrBadSig) {
		t.Fatalf("tampered %s: %v, want ErrBadSig", ToUpperHeader, err)
	}
	claimed := internalMessage("127.0.0.9:5070", "z9hG4bK-4") // a's signature, from elsewhere
	if err := a.Sign(claimed); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Verify(claimed); !errors.Is(err, ErrNotMember) {
		t.Fatalf("from a non-member host: %v, want ErrNotMember", err)
	}
	other := internalMessage("127.0.0.2:5070", "z9hG4bK-5")
	other.AppendHeader(sip.NewHeader(SignatureHeader, "node=a;ts="+strings.Repeat("1", 13)+";sig=AAAA"))
	if _, err := b.Verify(other); !errors.Is(err, ErrBadSig) {
		t.Fatalf("made-up signature: %v, want ErrBadSig", err)
	}
}
