package cascade

import (
	"context"
	"strconv"
	"strings"

	"github.com/emiago/sipgo/sip"

	"github.com/gbproxy/gbproxy/cascade/manscdp"
)

// udpDatagramLimit keeps a MESSAGE to an upper platform within one unfragmented
// datagram on any path (RFC 3261 §18.1.1 uses 1300 bytes).
const udpDatagramLimit = 1300

// tcpCatalogItems is how many catalog items go in one MESSAGE over TCP.
const tcpCatalogItems = 64

// catalogSendAttempts bounds retries of one catalog MESSAGE: a lost datagram
// must not end the transfer.
const catalogSendAttempts = 3

func (c *Cascade) upperByID(id string) *upperClient {
	for _, u := range c.uppers {
		if u.cfg.ID == id {
			return u
		}
	}
	return nil
}

// handleUpperMessage serves MESSAGEs from upper platforms.
func (c *Cascade) handleUpperMessage(req *sip.Request, tx sip.ServerTransaction) {
	from := req.From()
	var u *upperClient
	if from != nil {
		u = c.upperByID(from.Address.User)
	}
	if u == nil {
		c.log.Warn().Str("remote", req.Source()).Str("from", fromUser(req)).Msg("MESSAGE from an unconfigured upper platform refused; add it to upper.platforms")
		c.upper.Respond(tx, req, sip.StatusForbidden, "Forbidden (unknown platform)", nil)
		return
	}
	hdr, err := manscdp.Peek(req.Body())
	if err != nil {
		u.log.Warn().Err(err).Msg("MESSAGE with unreadable MANSCDP body answered 400")
		c.upper.Respond(tx, req, sip.StatusBadRequest, "Bad Request (MANSCDP body)", nil)
		return
	}
	if hdr.DeviceID != c.cfg.ID {
		c.upper.Respond(tx, req, sip.StatusNotFound, "Not Found (no such device here)", nil)
		u.log.Info().Str("device_id", hdr.DeviceID).Str("cmd_type", hdr.CmdType).Msg("query for an ID this proxy does not serve")
		return
	}
	switch {
	case hdr.Root == "Query" && hdr.CmdType == "Catalog":
		c.upper.Respond(tx, req, sip.StatusOK, "OK", nil)
		go c.sendCatalog(u, hdr.SN, strings.ToUpper(req.Transport()))
	case hdr.Root == "Query" && hdr.CmdType == "DeviceInfo":
		c.upper.Respond(tx, req, sip.StatusOK, "OK", nil)
		go c.answerUpper(u, &manscdp.DeviceInfoResponse{
			Base:         manscdp.Base{CmdType: "DeviceInfo", SN: hdr.SN, DeviceID: c.cfg.ID},
			Result:       "OK",
			DeviceName:   "gbproxy",
			Manufacturer: "gbproxy",
			Model:        "gbproxy",
			Firmware:     "0.1",
			Channel:      strconv.Itoa(len(c.registry.Channels())),
		})
	case hdr.Root == "Query" && hdr.CmdType == "DeviceStatus":
		c.upper.Respond(tx, req, sip.StatusOK, "OK", nil)
		go c.answerUpper(u, &manscdp.DeviceStatusResponse{
			Base:       manscdp.Base{CmdType: "DeviceStatus", SN: hdr.SN, DeviceID: c.cfg.ID},
			Result:     "OK",
			Online:     "ONLINE",
			Status:     "OK",
			DeviceTime: c.now().Format("2006-01-02T15:04:05"),
		})
	default:
		c.upper.Respond(tx, req, sip.StatusOK, "OK", nil)
		u.log.Debug().Str("root", hdr.Root).Str("cmd_type", hdr.CmdType).Msg("MESSAGE from upper platform accepted")
	}
}

func (c *Cascade) answerUpper(u *upperClient, v any) {
	body, err := manscdp.Encode("Response", v, manscdp.CharsetGB2312)
	if err != nil {
		u.log.Error().Err(err).Msg("encode response to upper platform")
		return
	}
	ctx, cancel := context.WithTimeout(c.ctx, requestTimeout)
	defer cancel()
	res, err := u.send(ctx, u.target(), sip.MESSAGE, body)
	if err != nil || !res.IsSuccess() {
		u.log.Warn().Err(err).Int("status", statusOf(res)).Msg("upper platform did not take our response")
	}
}

// sendCatalog answers an upper platform's Catalog query with every channel
// we hold, in as many MESSAGEs as needed: SumNum constant, DeviceList Num per
// message, each datagram within udpDatagramLimit over UDP.
func (c *Cascade) sendCatalog(u *upperClient, sn int64, transport string) {
	items := c.registry.catalogItems()
	log := u.log.With().Int64("sn", sn).Int("sum_num", len(items)).Logger()
	t := u.target()
	// An empty catalog is still answered: one message with SumNum 0.
	for sent := 0; sent == 0 || sent < len(items); {
		body, n := c.catalogChunk(items[sent:], sn, len(items), transport)
		if !c.deliverCatalog(u, t, body) {
			log.Error().Int("sent", sent).Msg("catalog transfer to upper platform aborted: MESSAGE refused or unanswered after retries")
			return
		}
		if n == 0 {
			break
		}
		sent += n
	}
	log.Info().Msg("catalog sent to upper platform")
}

// catalogChunk encodes the largest prefix of items that fits one message.
func (c *Cascade) catalogChunk(items []manscdp.CatalogItem, sn int64, sumNum int, transport string) ([]byte, int) {
	resp := &manscdp.CatalogResponse{Base: manscdp.Base{CmdType: "Catalog", SN: sn, DeviceID: c.cfg.ID}, SumNum: sumNum}
	encode := func(n int) []byte {
		resp.DeviceList = manscdp.ItemList{Num: n, Items: items[:n]}
		b, err := manscdp.Encode("Response", resp, manscdp.CharsetGB2312)
		if err != nil {
			c.log.Error().Err(err).Msg("encode catalog response")
		}
		return b
	}
	if transport == "TCP" {
		n := min(len(items), tcpCatalogItems)
		return encode(n), n
	}
	// SIP headers of our MESSAGE take about 550 bytes.
	budget := udpDatagramLimit - 550
	if len(items) == 0 {
		return encode(0), 0
	}
	n := 1
	body := encode(1)
	for n < len(items) {
		next := encode(n + 1)
		if len(next) > budget {
			break
		}
		body, n = next, n+1
	}
	return body, n
}

func (c *Cascade) deliverCatalog(u *upperClient, t upperTarget, body []byte) bool {
	for attempt := 1; attempt <= catalogSendAttempts; attempt++ {
		ctx, cancel := context.WithTimeout(c.ctx, requestTimeout)
		res, err := u.send(ctx, t, sip.MESSAGE, body)
		cancel()
		if err == nil && res.IsSuccess() {
			return true
		}
		if c.ctx.Err() != nil {
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
