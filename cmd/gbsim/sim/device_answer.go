package sim

import (
	"context"
	"encoding/xml"
	"fmt"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/emiago/sipgo/sip"
)

// gbTimeLayout is the MANSCDP date-time format (StartTime, EndTime, DeviceTime, AlarmTime).
const gbTimeLayout = "2006-01-02T15:04:05"

// Control is one DeviceControl or DeviceConfig command a device accepted.
type Control struct {
	Received
	// Command is the element naming the command: PTZCmd, RecordCmd, GuardCmd, AlarmCmd, TeleBoot,
	// IFameCmd, DragZoomIn, HomePosition, ... for DeviceControl; BasicParam, ... for DeviceConfig.
	Command string
	Value   string // the command element's content, e.g. the PTZCmd hex digits
	// Err says why the command is invalid (bad PTZCmd checksum, unknown target, unknown value);
	// commands with an answer are then answered with Result ERROR.
	Err error
}

// controlsAnswered are the DeviceControl commands GB/T 28181 §9.3 answers with a Response; PTZ,
// TeleBoot, IFameCmd, DragZoom, PTZPreciseCtrl, FormatSDCard and TargetTrack get none.
var controlsAnswered = map[string]bool{
	"RecordCmd": true, "GuardCmd": true, "AlarmCmd": true, "HomePosition": true, "DeviceUpgrade": true,
}

// Controls returns the controls the device accepted, in arrival order.
func (d *Device) Controls() []Control { return d.controls.all() }

// WaitControl returns the oldest control with this Command (any when empty) that no earlier
// WaitControl returned, waiting until one arrives or ctx ends.
func (d *Device) WaitControl(ctx context.Context, command string) (Control, error) {
	return d.controls.wait(ctx, "control "+command, func(c Control) bool { return command == "" || c.Command == command })
}

// onRequest records every request and dispatches it; MANSCDP MESSAGEs are answered 200 and then,
// for queries and some controls, by Response MESSAGEs.
func (d *Device) onRequest(req *sip.Request, tx sip.ServerTransaction) {
	onRegConn := req.Transport() == d.transport && connOriented(d.transport) && d.isRegConn(req.Source())
	rec, _ := newReceived(req, onRegConn)
	d.journal.add(rec)
	d.log.Info("request received", "method", rec.Method, "cmd_type", rec.CmdType, "sn", rec.SN,
		"source", rec.Source, "transport", rec.Transport, "on_reg_conn", onRegConn)
	switch {
	case req.IsAck():
		d.onAck(req)
	case req.Method == sip.INVITE:
		d.onInvite(req, tx)
	case req.Method == sip.BYE:
		d.onBye(req, tx)
	case req.Method == sip.CANCEL: // sipgo answers a CANCEL that matches a pending INVITE itself
		respond(d.log, tx, sip.NewResponseFromRequest(req, sip.StatusCallTransactionDoesNotExists, "Transaction Does Not Exist", nil))
	case req.Method == sip.MESSAGE:
		d.onMessage(req, tx, rec)
	case req.Method == sip.SUBSCRIBE:
		d.onSubscribe(req, tx, rec)
	case req.Method == sip.INFO:
		d.onInfo(req, tx)
	default:
		respond(d.log, tx, sip.NewResponseFromRequest(req, sip.StatusOK, "OK", nil))
	}
}

// rejectStatus returns the SIP status configured to refuse cmdType with, 0 to accept it.
func (d *Device) rejectStatus(cmdType string) int {
	if code, ok := d.cfg.Reject[cmdType]; ok {
		return code
	}
	return d.cfg.Reject["*"]
}

func (d *Device) onMessage(req *sip.Request, tx sip.ServerTransaction, rec Received) {
	if code := d.rejectStatus(rec.CmdType); rec.CmdType != "" && code != 0 {
		respond(d.log, tx, sip.NewResponseFromRequest(req, code, "Rejected By Configuration", nil))
		return
	}
	var cmd command
	if rec.Root == "Query" || rec.Root == "Control" {
		if err := decodeBody(rec.Body, &cmd); err != nil {
			respond(d.log, tx, sip.NewResponseFromRequest(req, sip.StatusBadRequest, "Bad MANSCDP Body", nil))
			return
		}
	}
	var ctl Control
	if rec.Root == "Control" {
		ctl = d.recordControl(rec, cmd)
	}
	respond(d.log, tx, sip.NewResponseFromRequest(req, sip.StatusOK, "OK", nil))
	if d.cfg.NoAnswer[rec.CmdType] {
		return
	}
	if rec.Root == "Notify" && rec.CmdType == "Broadcast" {
		d.onBroadcast(rec.Body)
	}
	switch rec.Root {
	case "Query":
		d.answerQuery(cmd)
	case "Control":
		d.answerControl(cmd, ctl)
	}
}

// targetID is the DeviceID a command is about, the device itself when absent.
func (d *Device) targetID(cmd command) string {
	if cmd.DeviceID == "" {
		return d.cfg.ID
	}
	return cmd.DeviceID
}

func (d *Device) answerQuery(cmd command) {
	id := d.targetID(cmd)
	switch cmd.CmdType {
	case "Catalog":
		d.goAnswer(cmd, func(ctx context.Context) error { return d.sendCatalog(ctx, cmd.SN) })
	case "DeviceInfo":
		d.answer(cmd, deviceInfoResponse{
			CmdType: cmd.CmdType, SN: cmd.SN, DeviceID: id, DeviceName: d.cfg.Model + " " + id,
			Result: "OK", Manufacturer: d.cfg.Manufacturer, Model: d.cfg.Model, Firmware: d.cfg.Firmware,
			Channel: d.cameraCount(),
		})
	case "DeviceStatus":
		d.mu.Lock()
		duty := d.duty
		d.mu.Unlock()
		d.answer(cmd, deviceStatusResponse{
			CmdType: cmd.CmdType, SN: cmd.SN, DeviceID: id, Result: "OK", Online: "ONLINE",
			Status: "OK", Encode: "ON", Record: "OFF", DeviceTime: time.Now().Format(gbTimeLayout),
			Alarmstatus: alarmStatus{Num: 1, Items: []alarmStatusItem{{DeviceID: id, DutyStatus: duty}}},
		})
	case "RecordInfo":
		d.goAnswer(cmd, func(ctx context.Context) error { return d.sendRecords(ctx, cmd) })
	case "PresetQuery":
		presets := []presetItem{{1, "预置位1"}, {2, "大门"}, {3, "停车场"}}
		d.answer(cmd, presetQueryResponse{CmdType: cmd.CmdType, SN: cmd.SN, DeviceID: id,
			PresetList: presetList{Num: len(presets), Items: presets}})
	case "ConfigDownload":
		d.answer(cmd, d.configDownload(cmd, id))
	case "HomePositionQuery":
		d.mu.Lock()
		home := d.home
		d.mu.Unlock()
		d.answer(cmd, homePositionResponse{CmdType: cmd.CmdType, SN: cmd.SN, DeviceID: id, Result: "OK", HomePosition: home})
	case "PTZPosition":
		d.answer(cmd, ptzPositionResponse{CmdType: cmd.CmdType, SN: cmd.SN, DeviceID: id, Pan: 120.5, Tilt: -10, Zoom: 2})
	default:
		// GB/T 28181 defines no error answer for an unknown query: the 200 OK is all the peer gets.
		d.log.Info("query type not simulated, left unanswered", "cmd_type", cmd.CmdType, "sn", cmd.SN)
	}
}

func (d *Device) configDownload(cmd command, id string) configDownloadResponse {
	d.mu.Lock()
	server := d.serverAddr
	d.mu.Unlock()
	host, portStr, _ := net.SplitHostPort(server)
	port, _ := strconv.Atoi(portStr)
	return configDownloadResponse{CmdType: cmd.CmdType, SN: cmd.SN, DeviceID: id, Result: "OK",
		BasicParam: basicParam{
			Name: d.cfg.Model + " " + d.cfg.ID, DeviceID: d.cfg.ID, SIPServerID: d.cfg.ServerID,
			SIPServerIP: host, SIPServerPort: port, DomainName: d.cfg.Domain, Expiration: d.cfg.Expires,
			HeartBeatInterval: int(max(d.cfg.KeepaliveInterval, 0) / time.Second), HeartBeatCount: keepaliveMaxFailures,
		}}
}

// cameraCount counts the catalog entries that are devices, not directory nodes.
func (d *Device) cameraCount() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	n := 0
	for _, ch := range d.channels {
		if !isDirectory(ch.ID) {
			n++
		}
	}
	return n
}

// recordControl parses, checks, applies and records a Control; the command is its first child other
// than the Info block that may accompany it.
func (d *Device) recordControl(rec Received, cmd command) Control {
	ctl := Control{Received: rec}
	for _, e := range cmd.Children {
		if e.XMLName.Local != "Info" {
			ctl.Command, ctl.Value = e.XMLName.Local, strings.TrimSpace(e.Inner)
			break
		}
	}
	ctl.Err = d.applyControl(cmd, ctl)
	if ctl.Err != nil {
		d.log.Warn("invalid control", "cmd_type", cmd.CmdType, "command", ctl.Command, "error", ctl.Err)
	}
	d.controls.add(ctl)
	return ctl
}

func (d *Device) applyControl(cmd command, ctl Control) error {
	if !d.knows(cmd.DeviceID) {
		return fmt.Errorf("device %s has no channel %q", d.cfg.ID, cmd.DeviceID)
	}
	if ctl.Command == "" {
		return fmt.Errorf("%s without a command element", cmd.CmdType)
	}
	if cmd.CmdType != "DeviceControl" {
		return nil // DeviceConfig: every parameter block is accepted
	}
	valueIn := func(allowed ...string) error {
		for _, a := range allowed {
			if ctl.Value == a {
				return nil
			}
		}
		return fmt.Errorf("%s %q: want one of %v", ctl.Command, ctl.Value, allowed)
	}
	switch ctl.Command {
	case "PTZCmd":
		return CheckPTZCmd(ctl.Value)
	case "TeleBoot":
		return valueIn("Boot")
	case "IFameCmd":
		return valueIn("Send")
	case "RecordCmd":
		return valueIn("Record", "StopRecord")
	case "GuardCmd":
		if err := valueIn("SetGuard", "ResetGuard"); err != nil {
			return err
		}
		d.setDuty(map[string]string{"SetGuard": "ONDUTY", "ResetGuard": "OFFDUTY"}[ctl.Value])
	case "AlarmCmd":
		if err := valueIn("ResetAlarm"); err != nil {
			return err
		}
		d.mu.Lock()
		if d.duty == "ALARM" {
			d.duty = "ONDUTY"
		}
		d.mu.Unlock()
	case "HomePosition":
		var hp homePosition
		if err := xml.Unmarshal([]byte("<HomePosition>"+ctl.Value+"</HomePosition>"), &hp); err != nil {
			return fmt.Errorf("HomePosition: %w", err)
		}
		d.mu.Lock()
		d.home = hp
		d.mu.Unlock()
	case "DragZoomIn", "DragZoomOut", "PTZPreciseCtrl", "FormatSDCard", "TargetTrack", "DeviceUpgrade":
	default:
		return fmt.Errorf("unknown DeviceControl command %s", ctl.Command)
	}
	return nil
}

func (d *Device) setDuty(duty string) {
	d.mu.Lock()
	d.duty = duty
	d.mu.Unlock()
}

// knows reports whether id is the device or one of its catalog entries.
func (d *Device) knows(id string) bool {
	_, ok := d.channel(id)
	return ok
}

// channel returns the catalog entry with this ID; the device itself counts as one.
func (d *Device) channel(id string) (Channel, bool) {
	if id == d.cfg.ID {
		return Channel{ID: id, Name: d.cfg.Model + " " + id, Status: "ON"}, true
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, ch := range d.channels {
		if ch.ID == id {
			return ch, true
		}
	}
	return Channel{}, false
}

func (d *Device) answerControl(cmd command, ctl Control) {
	result := "OK"
	if ctl.Err != nil {
		result = "ERROR"
	}
	if cmd.CmdType == "DeviceConfig" || cmd.CmdType == "DeviceControl" && controlsAnswered[ctl.Command] {
		d.answer(cmd, resultResponse{CmdType: cmd.CmdType, SN: cmd.SN, DeviceID: d.targetID(cmd), Result: result})
	}
	if ctl.Command == "SnapShotConfig" && ctl.Err == nil {
		d.finishSnapshot(cmd)
	}
}

// answer sends v as the single Response MESSAGE to cmd.
func (d *Device) answer(cmd command, v any) {
	d.goAnswer(cmd, func(ctx context.Context) error { return d.sendMANSCDP(ctx, v) })
}

// goAnswer sends an answer in the background: the handler must return for sipgo to finish the
// transaction, and the answer must follow the 200 OK.
func (d *Device) goAnswer(cmd command, send func(ctx context.Context) error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return
	}
	d.wg.Add(1)
	go func() {
		defer d.wg.Done()
		if err := send(d.ctx); err != nil && d.ctx.Err() == nil {
			d.log.Warn("answer failed", "cmd_type", cmd.CmdType, "sn", cmd.SN, "error", err)
		}
	}()
}

// sendChunks sends total items, per in each MESSAGE built by build(start, end); with no items it
// sends one message (SumNum 0). pause separates messages.
func (d *Device) sendChunks(ctx context.Context, what string, total, per int, pause time.Duration, build func(start, end int) any) error {
	for start := 0; start == 0 || start < total; start += per {
		end := min(start+per, total)
		if err := d.sendMANSCDP(ctx, build(start, end)); err != nil {
			return fmt.Errorf("%s items %d-%d of %d: %w", what, start+1, end, total, err)
		}
		if pause > 0 && end < total {
			select {
			case <-time.After(pause):
			case <-ctx.Done():
				return ctx.Err()
			}
		}
	}
	return nil
}

// sendCatalog answers a Catalog query with SumNum = all entries, CatalogPerMessage items a MESSAGE.
func (d *Device) sendCatalog(ctx context.Context, sn int) error {
	d.mu.Lock()
	items := make([]catalogItem, len(d.channels))
	for i, ch := range d.channels {
		items[i] = d.catalogItem(ch)
	}
	d.mu.Unlock()
	return d.sendChunks(ctx, "catalog", len(items), d.cfg.CatalogPerMessage, d.cfg.CatalogInterval, func(start, end int) any {
		return catalogResponse{CmdType: "Catalog", SN: sn, DeviceID: d.cfg.ID, SumNum: len(items),
			DeviceList: catalogList{Num: end - start, Items: items[start:end]}}
	})
}

// catalogItem describes a channel: directory nodes by ID, name and place in the tree only, devices
// with every element.
func (d *Device) catalogItem(ch Channel) catalogItem {
	parent := ch.ParentID
	if parent == "" {
		parent = d.cfg.ID
	}
	it := catalogItem{DeviceID: ch.ID, Name: ch.Name, CivilCode: ch.CivilCode, Parental: strconv.Itoa(ch.Parental),
		ParentID: parent, BusinessGroupID: ch.BusinessGroupID}
	if isDirectory(ch.ID) {
		return it
	}
	if it.CivilCode == "" {
		it.CivilCode = d.cfg.Domain[:min(6, len(d.cfg.Domain))]
	}
	it.Status = ch.Status
	if it.Status == "" {
		it.Status = "ON"
	}
	it.Manufacturer, it.Model, it.Owner, it.Address = d.cfg.Manufacturer, d.cfg.Model, "Owner", "Address"
	it.SafetyWay, it.RegisterWay, it.Secrecy = "0", "1", "0"
	return it
}

// sendRecords answers a RecordInfo query with RecordsPerQuery recordings of the channel spread over
// the asked range, RecordsPerMessage a MESSAGE; an unknown channel or an empty range has none.
func (d *Device) sendRecords(ctx context.Context, cmd command) error {
	id := d.targetID(cmd)
	ch, known := d.channel(id)
	start, end := recordRange(cmd)
	n := d.cfg.RecordsPerQuery
	if !known || !end.After(start) {
		n = 0
	}
	records := make([]recordItem, n)
	slot := end.Sub(start) / time.Duration(max(n, 1))
	for i := range records {
		from := start.Add(time.Duration(i) * slot)
		to := from.Add(max(slot*3/4, time.Second))
		// Kept short: two records and the SIP headers must fit sipgo's 1300-byte UDP limit.
		records[i] = recordItem{
			DeviceID: id, Name: ch.Name, FilePath: "/rec/" + from.Format("20060102150405") + ".ps",
			Address: "录像存储1", StartTime: from.Format(gbTimeLayout), EndTime: to.Format(gbTimeLayout),
			Type: "time", FileSize: int64(to.Sub(from)/time.Second) * 256 << 10, // 2 Mbit/s
		}
	}
	return d.sendChunks(ctx, "record list", n, d.cfg.RecordsPerMessage, 0, func(from, to int) any {
		return recordInfoResponse{CmdType: "RecordInfo", SN: cmd.SN, DeviceID: id, Name: ch.Name, SumNum: n,
			RecordList: recordList{Num: to - from, Items: records[from:to]}}
	})
}

// recordRange reads StartTime and EndTime; a missing or malformed bound means today so far.
func recordRange(cmd command) (time.Time, time.Time) {
	now := time.Now()
	start := time.Date(now.Year(), now.Month(), now.Day(), 0, 0, 0, 0, time.Local)
	end := now
	if v, ok := cmd.field("StartTime"); ok {
		if t, err := time.ParseInLocation(gbTimeLayout, strings.TrimSpace(v), time.Local); err == nil {
			start = t
		}
	}
	if v, ok := cmd.field("EndTime"); ok {
		if t, err := time.ParseInLocation(gbTimeLayout, strings.TrimSpace(v), time.Local); err == nil {
			end = t
		}
	}
	return start, end
}
