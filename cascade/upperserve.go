package cascade

import (
	"context"
	"encoding/xml"
	"strconv"
	"strings"
	"time"

	"github.com/emiago/sipgo/sip"

	"github.com/gbproxy/gbproxy/cascade/manscdp"
	"github.com/gbproxy/gbproxy/endpoint"
)

// udpDatagramLimit keeps a MESSAGE to an upper platform within one unfragmented
// datagram on any path (RFC 3261 §18.1.1 uses 1300 bytes).
const udpDatagramLimit = 1300

// tcpCatalogItems is how many catalog items go in one MESSAGE over TCP.
const tcpCatalogItems = 64

// catalogSendAttempts bounds retries of one catalog MESSAGE: a lost datagram
// must not end the transfer.
const catalogSendAttempts = 3

// catalogGiveUpAfter consecutive failed MESSAGEs end a transfer: the
// platform is gone, and it will ask again when it is back.
const catalogGiveUpAfter = 5

// handleUpperMessage serves MESSAGEs from upper platforms: queries to our
// own ID are answered here, everything else is routed to the owning device.
func (up *upperSide) handleUpperMessage(req *sip.Request, tx sip.ServerTransaction) {
	if up.reportFromNode(req, tx) || up.relayedUp(req, tx) || up.inForwardedCall(req, tx) {
		return
	}
	u := up.upperOf(req)
	if u == nil {
		up.log.Warn().Str("remote", req.Source()).Str("from", fromUser(req)).Msg("MESSAGE from an unconfigured upper platform refused; add it to upper.platforms")
		up.ep.Respond(tx, req, sip.StatusForbidden, "Forbidden (unknown platform)", nil)
		return
	}
	hdr, err := manscdp.Peek(req.Body())
	if err != nil {
		u.log.Warn().Err(err).Str("call_id", callIDOf(req)).Msg("MESSAGE with unreadable MANSCDP body answered 400")
		up.ep.Respond(tx, req, sip.StatusBadRequest, "Bad Request (MANSCDP body)", nil)
		return
	}
	switch {
	case hdr.Root == manscdp.RootResponse:
		// The upper's side of an exchange we started (alarm acknowledgement).
		up.ep.Respond(tx, req, sip.StatusOK, "OK", nil)
		u.log.Debug().Str("cmd_type", hdr.CmdType).Int64("sn", hdr.SN).Str("device_id", hdr.DeviceID).Msg("response from upper platform taken")
	case hdr.Root == manscdp.RootNotify && hdr.CmdType == manscdp.CmdBroadcast:
		up.routeBroadcast(u, req, tx, hdr)
	case hdr.DeviceID == up.cfg.ID:
		up.answerForSelf(u, req, tx, hdr)
	default:
		up.route(u, req, tx, hdr)
	}
}

// answerForSelf answers what an upper asks of the proxy itself.
func (up *upperSide) answerForSelf(u *upperClient, req *sip.Request, tx sip.ServerTransaction, hdr manscdp.Header) {
	switch {
	case hdr.Root == manscdp.RootQuery && hdr.CmdType == "Catalog":
		up.ep.Respond(tx, req, sip.StatusOK, "OK", nil)
		transport := strings.ToUpper(req.Transport())
		up.tasks.spawn(func() { up.sendCatalog(u, hdr.SN, transport) })
	case hdr.Root == manscdp.RootQuery && hdr.CmdType == "DeviceInfo":
		up.ep.Respond(tx, req, sip.StatusOK, "OK", nil)
		up.answerUpperLater(u, &manscdp.DeviceInfoResponse{
			Base:         manscdp.Base{CmdType: "DeviceInfo", SN: hdr.SN, DeviceID: up.cfg.ID},
			Result:       "OK",
			DeviceName:   "gbproxy",
			DeviceType:   "SIP Server",
			Manufacturer: "gbproxy",
			Model:        "gbproxy",
			Firmware:     endpoint.Product,
			Channel:      strconv.Itoa(len(up.catalogFor(u.view()))),
		})
	case hdr.Root == manscdp.RootQuery && hdr.CmdType == "DeviceStatus":
		up.ep.Respond(tx, req, sip.StatusOK, "OK", nil)
		up.answerUpperLater(u, &manscdp.DeviceStatusResponse{
			Base:       manscdp.Base{CmdType: "DeviceStatus", SN: hdr.SN, DeviceID: up.cfg.ID},
			Result:     "OK",
			Online:     "ONLINE",
			Status:     "OK",
			DeviceTime: up.now().Format("2006-01-02T15:04:05"),
		})
	case hdr.Root == manscdp.RootQuery:
		up.ep.Respond(tx, req, sip.StatusOK, "OK", nil)
		u.log.Info().Str("cmd_type", hdr.CmdType).Msg("query to the proxy itself that it has no answer for; Result ERROR sent")
		up.answerUpperLater(u, &manscdp.ResultResponse{Base: manscdp.Base{CmdType: hdr.CmdType, SN: hdr.SN, DeviceID: up.cfg.ID}, Result: "ERROR"})
	default:
		up.ep.Respond(tx, req, sip.StatusOK, "OK", nil)
		u.log.Debug().Str("root", hdr.Root).Str("cmd_type", hdr.CmdType).Msg("MESSAGE to the proxy itself accepted")
	}
}

// answerUpperLater sends v as a task of its own, after the 200 went out.
func (up *upperSide) answerUpperLater(u *upperClient, v any) {
	up.tasks.spawn(func() { up.answerUpper(u, v) })
}

// answerUpper sends v to the upper platform as a Response MESSAGE.
func (up *upperSide) answerUpper(u *upperClient, v any) {
	body, err := manscdp.Encode(manscdp.RootResponse, v, u.charset())
	if err != nil {
		u.log.Error().Err(err).Msg("encode response to upper platform")
		return
	}
	if err := u.message(body); err != nil {
		u.log.Warn().Err(err).Msg("upper platform did not take our response")
	}
}

// sendCatalog answers an upper platform's Catalog query with what it is
// shared, in as many MESSAGEs as needed: SumNum constant, DeviceList Num per
// message, paced by catalog_rate. A MESSAGE that fails after retries is
// counted and skipped; only a platform that stops answering ends the
// transfer.
func (up *upperSide) sendCatalog(u *upperClient, sn int64, transport string) {
	items := up.catalogFor(u.view())
	log := u.log.With().Int64("sn", sn).Int("sum_num", len(items)).Logger()
	t := u.target()
	bodies, err := up.catalogBodies(manscdp.RootResponse, sn, items, u.catalogPerMessage(transport), up.datagramBudget(u, t), u.charset())
	if err != nil {
		log.Error().Err(err).Msg("catalog could not be encoded for the upper platform")
		return
	}
	xfer := CatalogTransfer{SN: sn, SumNum: len(items), Started: up.now()}
	publish := func() { // a copy: the API reads it while we go on
		snap := xfer
		u.update(func(st *PlatformState) { st.LastCatalog = &snap })
	}
	publish()
	var pace <-chan time.Time
	if u.cfg().CatalogRate > 0 {
		tick := time.NewTicker(time.Duration(float64(time.Second) / u.cfg().CatalogRate))
		defer tick.Stop()
		pace = tick.C
	}
	failedInRow := 0
	for i, b := range bodies {
		if pace != nil && i > 0 {
			select {
			case <-pace:
			case <-up.ctx.Done():
				return
			}
		}
		ok := up.deliverCatalog(u, t, b.body)
		xfer.Messages++
		if ok {
			xfer.Sent += b.items
		} else {
			xfer.Failed++
		}
		publish()
		if ok {
			failedInRow = 0
			continue
		}
		failedInRow++
		log.Error().Int("message", i+1).Int("messages", len(bodies)).Msg("catalog MESSAGE to upper platform failed after retries; continuing with the next")
		if failedInRow >= catalogGiveUpAfter || up.ctx.Err() != nil {
			log.Error().Msg("catalog transfer to upper platform abandoned: it stopped answering; it will get the catalog when it asks again")
			return
		}
	}
	xfer.Finished = up.now()
	publish()
	log.Info().Int("messages", len(bodies)).Msg("catalog sent to upper platform")
}

// catalogPerMessage is catalog_items_per_message, or the transport's default
// (0 over UDP: fill the datagram).
func (u *upperClient) catalogPerMessage(transport string) int {
	if u.cfg().CatalogItemsPerMessage > 0 {
		return u.cfg().CatalogItemsPerMessage
	}
	if endpoint.ConnOriented(transport) {
		return tcpCatalogItems
	}
	return 0
}

// datagramBudget is how much body fits in one udpDatagramLimit datagram
// beside the headers of our MESSAGE to this platform.
func (up *upperSide) datagramBudget(u *upperClient, t upperTarget) int {
	req := u.newRequest(sip.MESSAGE, t, endpoint.Peer{Transport: "UDP", Addr: t.addr})
	req.AppendHeader(sip.NewHeader("Content-Type", contentTypeMANSCDP))
	// What leaves carries Monitor-User-Identity, and Date and Note when signed.
	up.toUpper(req)
	headers := len(req.String()) + 8 // Content-Length digits
	return udpDatagramLimit - headers
}

type catalogBody struct {
	body  []byte
	items int
}

// catalogBodies splits one catalog answer or notification into MESSAGE
// bodies: per items each, or (per = 0) as many as fit budget bytes.
func (up *upperSide) catalogBodies(root string, sn int64, items []manscdp.CatalogItem, per, budget int, cs manscdp.Charset) ([]catalogBody, error) {
	resp := &manscdp.CatalogResponse{Base: manscdp.Base{CmdType: "Catalog", SN: sn, DeviceID: up.cfg.ID}, SumNum: len(items)}
	encode := func(chunk []manscdp.CatalogItem) ([]byte, error) {
		resp.DeviceList = manscdp.ItemList{Items: chunk}
		return manscdp.Encode(root, resp, cs)
	}
	var out []catalogBody
	if len(items) == 0 { // an empty catalog is still answered: SumNum 0
		b, err := encode(nil)
		return []catalogBody{{body: b}}, err
	}
	if per > 0 {
		for start := 0; start < len(items); start += per {
			chunk := items[start:min(start+per, len(items))]
			b, err := encode(chunk)
			if err != nil {
				return nil, err
			}
			out = append(out, catalogBody{b, len(chunk)})
		}
		return out, nil
	}
	empty, err := encode(nil)
	if err != nil {
		return nil, err
	}
	sizes := make([]int, len(items))
	for i := range items {
		sizes[i] = itemSize(&items[i])
	}
	for start := 0; start < len(items); {
		n, size := 1, len(empty)+sizes[start]
		for start+n < len(items) && size+sizes[start+n] <= budget {
			size += sizes[start+n]
			n++
		}
		b, err := encode(items[start : start+n])
		for err == nil && len(b) > budget && n > 1 { // the estimate was short
			n--
			b, err = encode(items[start : start+n])
		}
		if err != nil {
			return nil, err
		}
		out = append(out, catalogBody{b, n})
		start += n
	}
	return out, nil
}

// itemSize estimates an item's encoded size: its UTF-8 XML, which is never
// shorter than the GB2312 form.
func itemSize(it *manscdp.CatalogItem) int {
	b, err := xml.Marshal(struct {
		XMLName xml.Name `xml:"Item"`
		*manscdp.CatalogItem
	}{CatalogItem: it})
	if err != nil {
		return udpDatagramLimit
	}
	return len(b)
}

func (up *upperSide) deliverCatalog(u *upperClient, t upperTarget, body []byte) bool {
	for attempt := 1; attempt <= catalogSendAttempts; attempt++ {
		ctx, cancel := context.WithTimeout(up.ctx, requestTimeout)
		res, err := u.send(ctx, t, sip.MESSAGE, body)
		cancel()
		if err == nil && res.IsSuccess() {
			return true
		}
		if up.ctx.Err() != nil {
			return false
		}
		u.log.Warn().Err(err).Int("status", statusOf(res)).Int("attempt", attempt).Msg("catalog MESSAGE to upper platform failed; retrying")
	}
	return false
}

func fromUser(req *sip.Request) string {
	if f := req.From(); f != nil {
		return f.Address.User
	}
	return ""
}
