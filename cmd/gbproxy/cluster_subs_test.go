package main

import (
	"slices"
	"testing"
	"time"

	"github.com/gbproxy/gbproxy/cmd/gbsim/sim"
)

// notifiesOf counts a subscription's NOTIFYs of kind about id.
func notifiesOf(sub *sim.Subscription, kind, id string) int {
	n := 0
	for _, r := range sub.Notifies() {
		if r.CmdType == kind && r.DeviceID == id {
			n++
		}
	}
	return n
}

func hasSub(kind string) func([]sim.SubscriptionInfo) bool {
	return func(subs []sim.SubscriptionInfo) bool {
		return slices.ContainsFunc(subs, func(s sim.SubscriptionInfo) bool { return s.CmdType == kind })
	}
}

// An upper's Alarm and MobilePosition subscriptions at the registering
// node reach devices on the other nodes: their nodes subscribe to them,
// and what they report reaches the upper as NOTIFY in its dialog with the
// registering node, once (the alarm MESSAGE once besides); a device
// nobody subscribed to is not subscribed to; unsubscribing ends the
// owner's subscription to its device.
func TestClusterSubscriptionsAcrossNodes(t *testing.T) {
	c := startUpperCluster(t, map[string]string{"node-a": "34020000001110000031", "node-b": "34020000001110000032", "node-c": "34020000001110000033"})
	up, rig, ids, devs, devices, leader, ctx := c.up, c.rig, c.ids, c.devs, c.devices, c.leader, c.ctx
	owner, third := c.after(1), c.after(2)

	alarms, err := up.Subscribe(ctx, proxyID, "Alarm", "", 600)
	if err != nil {
		t.Fatalf("Alarm subscription to the cluster: %v", err)
	}
	positions, err := up.Subscribe(ctx, proxyID, "MobilePosition", devs[owner], 600)
	if err != nil {
		t.Fatalf("MobilePosition subscription to %s on %s: %v", devs[owner], owner, err)
	}
	for _, id := range ids {
		if _, err := devices[id].WaitSubscriptions(ctx, hasSub("Alarm")); err != nil {
			t.Fatalf("the Alarm subscription for everything: %s's device not subscribed to: %v", id, err)
		}
	}
	if _, err := devices[owner].WaitSubscriptions(ctx, hasSub("MobilePosition")); err != nil {
		t.Fatalf("%s's device not subscribed to for MobilePosition: %v", owner, err)
	}

	// Each node's device raises an alarm on a channel: one NOTIFY each,
	// one alarm MESSAGE each, though the device sends MESSAGE and NOTIFY.
	for _, id := range []string{owner, third, leader} {
		ch := sim.MakeChannels(devs[id], 2)[1].ID
		if _, err := devices[id].SendAlarm(ctx, sim.AlarmConfig{ChannelID: ch, Description: "door"}); err != nil {
			t.Fatalf("alarm of %s on %s: %v", ch, id, err)
		}
		eventually(t, 10*time.Second, "an Alarm NOTIFY for "+ch+" on "+id, func() bool { return notifiesOf(alarms, "Alarm", ch) > 0 })
		if _, err := up.WaitAlarm(ctx, ch); err != nil {
			t.Fatalf("no alarm MESSAGE for %s on %s: %v", ch, id, err)
		}
	}
	for _, id := range ids {
		ch := sim.MakeChannels(devs[id], 2)[1].ID
		msgs := 0
		for _, a := range up.Alarms() {
			if a.DeviceID == ch {
				msgs++
			}
		}
		if n := notifiesOf(alarms, "Alarm", ch); n != 1 || msgs != 1 {
			t.Errorf("alarm of %s on %s: %d NOTIFYs and %d MESSAGEs, want one of each", ch, id, n, msgs)
		}
	}
	for _, r := range alarms.Notifies() {
		if r.Source != rig.nodes[leader].upper {
			t.Errorf("Alarm NOTIFY from %s, want the registering node %s", r.Source, rig.nodes[leader].upper)
		}
	}

	// Positions: the subscribed device's reach the upper, the third's
	// (nobody subscribed to it) neither subscribe it nor reach the upper.
	if err := devices[third].SendMobilePosition(ctx, sim.MobilePosition{Longitude: 1, Latitude: 1}); err != nil {
		t.Fatal(err)
	}
	if err := devices[owner].SendMobilePosition(ctx, sim.MobilePosition{Longitude: 120.1, Latitude: 30.2}); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "a MobilePosition NOTIFY for "+devs[owner]+" on "+owner, func() bool {
		return notifiesOf(positions, "MobilePosition", devs[owner]) > 0
	})
	if hasSub("MobilePosition")(devices[third].Subscriptions()) {
		t.Errorf("%s's device subscribed to for MobilePosition; only %s's was asked for", third, owner)
	}
	if n := notifiesOf(positions, "MobilePosition", devs[owner]); n != 1 || len(positions.Notifies()) != 1 {
		t.Errorf("MobilePosition NOTIFYs %d for %s (of %d), want exactly one", n, devs[owner], len(positions.Notifies()))
	}

	// Unsubscribing ends the owner's subscription to its device.
	if err := positions.Unsubscribe(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := devices[owner].WaitSubscriptions(ctx, func(s []sim.SubscriptionInfo) bool { return !hasSub("MobilePosition")(s) }); err != nil {
		t.Fatalf("%s still subscribed to its device after the upper unsubscribed: %v", owner, err)
	}
}

// An upper's voice broadcast (GB/T 28181 §9.12) to a channel on another
// node than the registering one: the Notify is forwarded to the owner, the
// device's Response reaches the upper, the device calls its node back, and
// the upper's audio reaches the device. (The owner calls the upper's voice
// source itself, not through the registering node.)
func TestClusterBroadcastToAnotherNode(t *testing.T) {
	c := startUpperCluster(t, map[string]string{"node-a": "34020000001110000041", "node-b": "34020000001110000042"})
	up, rig, devs, devices, leader, ctx := c.up, c.rig, c.devs, c.devices, c.leader, c.ctx
	owner := c.after(1)
	ch := sim.MakeChannels(devs[owner], 2)[0].ID
	ans, err := up.Broadcast(ctx, proxyID, voiceSource, ch)
	if err != nil || ans.Status != 200 || len(ans.Bodies) == 0 || ans.Bodies[0].Result != "OK" {
		t.Fatalf("Broadcast to %s on %s: %+v, %v", ch, owner, ans, err)
	}
	src, err := up.WaitVoiceSource(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// The platform takes calls only from the node registered to it: the
	// owner's call to the voice source comes through the leader.
	if src.Remote != rig.nodes[leader].upper {
		t.Fatalf("voice source called from %s, want the leader %s's upper side %s (owner %s's is %s)",
			src.Remote, leader, rig.nodes[leader].upper, owner, rig.nodes[owner].upper)
	}
	voice, err := devices[owner].WaitVoice(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := src.Send(make([]byte, 160), make([]byte, 160), make([]byte, 160)); err != nil {
		t.Fatal(err)
	}
	if _, err := voice.Receiver().WaitPackets(ctx, 3); err != nil {
		t.Fatalf("audio at the device on %s: %v", owner, err)
	}
	var sessions []struct {
		Kind string `json:"kind"`
		Node string `json:"node"`
	}
	getJSON(t, rig.nodes[leader].http, "/api/v1/sessions?local=true", &sessions)
	if len(sessions) != 1 || sessions[0].Kind != "broadcast" || sessions[0].Node != owner {
		t.Fatalf("leader %s's own sessions: %+v, want the broadcast it passes on for %s", leader, sessions, owner)
	}
	if err := src.Bye(ctx); err != nil {
		t.Fatal(err)
	}
	waitClosed(t, ctx, voice.Ended(), "device leg after the upper's BYE")
	eventually(t, 10*time.Second, "the leader forgets the passed-on call after the BYE", func() bool {
		getJSON(t, rig.nodes[leader].http, "/api/v1/sessions?local=true", &sessions)
		return len(sessions) == 0
	})
}
