package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/gbproxy/gbproxy/cmd/gbsim/sim"
)

// The web console in a real headless Chromium, against a proxy with a
// simulated device, a lower platform and upper platforms over real sockets.
// GBPROXY_SCREENSHOTS=docs (relative to the repository root) saves a PNG of
// each view there for the README.

const (
	consoleToken = "console-secret"
	// hostileName is a channel name a device might send to run script in the
	// operator's browser: the console must show it as text.
	hostileName = `<img src=x onerror="document.title='pwned'">`
	mappedCam   = "44010000001310000001"
	uiWait      = 15 * time.Second
)

// newBrowser starts a headless Chromium tab, or skips the test when none is
// installed (GBPROXY_REQUIRE_BROWSER=1 makes that a failure, as in CI).
func newBrowser(t *testing.T) context.Context {
	t.Helper()
	var path string
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "headless-shell"} {
		if p, err := exec.LookPath(name); err == nil {
			path = p
			break
		}
	}
	if path == "" {
		if os.Getenv("GBPROXY_REQUIRE_BROWSER") == "1" {
			t.Fatal("no chromium/chrome binary on PATH and GBPROXY_REQUIRE_BROWSER=1 (apt-get install chromium)")
		}
		t.Skip("no chromium/chrome binary on PATH: the console's browser test needs one (apt-get install chromium; .ci/run installs it)")
	}
	// In a container: root (no sandbox), no GPU, a small /dev/shm.
	opts := append(chromedp.DefaultExecAllocatorOptions[:], chromedp.ExecPath(path), chromedp.Headless,
		chromedp.NoSandbox, chromedp.DisableGPU, chromedp.Flag("disable-dev-shm-usage", true), chromedp.WindowSize(1440, 900))
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(allocCtx)
	t.Cleanup(func() { cancel(); cancelAlloc() })
	// The first Do starts the browser and binds it to ctx, which has no deadline.
	if err := chromedp.Do(ctx); err != nil {
		t.Fatalf("start %s: %v", path, err)
	}
	return ctx
}

// ui runs browser actions with a deadline, failing the test with the
// console's status line when they don't complete.
func ui(t *testing.T, ctx context.Context, what string, actions ...chromedp.Action[chromedp.Void]) {
	t.Helper()
	tctx, cancel := context.WithTimeout(ctx, uiWait)
	defer cancel()
	if err := chromedp.Do(tctx, actions...); err != nil {
		t.Fatalf("%s: %v (console status: %q)", what, err, pageText(ctx, "#status"))
	}
}

// waitFor polls a JS expression until it is true.
func waitFor(t *testing.T, ctx context.Context, what, expr string) {
	t.Helper()
	tctx, cancel := context.WithTimeout(ctx, uiWait+5*time.Second)
	defer cancel()
	if _, err := chromedp.Run(tctx, chromedp.Poll[bool]("!!("+expr+")", chromedp.WithPollingTimeout(uiWait))); err != nil {
		t.Fatalf("waiting for %s: %v (console status: %q)", what, err, pageText(ctx, "#status"))
	}
}

// pageText is the text of the first element matching sel, "" if none.
func pageText(ctx context.Context, sel string) string {
	tctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	s, _ := chromedp.Run(tctx, chromedp.Evaluate[string](fmt.Sprintf(`document.querySelector(%s)?.textContent ?? ""`, jsString(sel))))
	return s
}

func jsString(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}

// rowJS is the table row of tbody in table whose data-key is id, in JS.
func rowJS(table, key, id string) string {
	return fmt.Sprintf(`[...document.querySelectorAll(%s)].find(r => r.dataset.%s === %s)`,
		jsString(table+" tbody tr"), key, jsString(id))
}

// setField sets a form field by name, as typing would.
func setField(t *testing.T, ctx context.Context, form, name, value string) {
	t.Helper()
	tctx, cancel := context.WithTimeout(ctx, uiWait)
	defer cancel()
	got, err := chromedp.Run(tctx, chromedp.Evaluate[string](fmt.Sprintf(`(() => {
		const f = document.querySelector(%s).elements[%s];
		f.value = %s;
		f.dispatchEvent(new Event("input", {bubbles: true}));
		return f.tagName + ":" + f.value;
	})()`, jsString(form), jsString(name), jsString(value))))
	if err != nil || !strings.HasSuffix(got, ":"+value) {
		t.Fatalf("set %s %s to %q: %q, %v", form, name, value, got, err)
	}
}

// screenshot saves the page as docs/console-<name>.png when
// GBPROXY_SCREENSHOTS names a directory.
func screenshot(t *testing.T, ctx context.Context, name string) {
	t.Helper()
	dir := os.Getenv("GBPROXY_SCREENSHOTS")
	if dir == "" {
		return
	}
	if !filepath.IsAbs(dir) {
		dir = filepath.Join("..", "..", dir) // from cmd/gbproxy to the repository root
	}
	tctx, cancel := context.WithTimeout(ctx, uiWait)
	defer cancel()
	png, err := chromedp.Run(tctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatalf("screenshot %s: %v", name, err)
	}
	if err := os.WriteFile(filepath.Join(dir, "console-"+name+".png"), png, 0o644); err != nil {
		t.Fatal(err)
	}
}

func (p *testProxy) consoleURL() string { return "http://" + p.httpLn.Addr().String() + "/" }

func TestConsole(t *testing.T) {
	ctx := newBrowser(t)
	sctx := ctxTimeout(t, 2*time.Minute)
	upper := newUpper(t, "127.0.0.1:0", nil)
	p := startProxy(t, "", fmt.Sprintf(`
lower:
  listen: "127.0.0.1:0"
  keepalive_interval: 300ms
  keepalive_timeout_count: 3
  catalog_timeout: 2s
  stream_mode: udp
upper:
  listen: "127.0.0.1:0"
  platforms:
    - id: %q
      address: %q
      transport: udp
      password: %q
      keepalive_interval: 300ms
      retry_interval: 300ms
      share:
        map: {%q: %q}
`, upperID, upper.Addr(), upperPass, sim.MakeChannels(liveDevice, 1)[0].ID, mappedCam))
	cams := sim.MakeChannels(liveDevice, 2)
	cams[1].Name = hostileName
	dev := newDevice(t, p, liveDevice, "udp", 0, func(c *sim.DeviceConfig) { c.Channels = cams })
	tree := sim.MakeTree(platTCP, "340201", 2, 2)
	plat := newDevice(t, p, platTCP, "tcp", 0, func(c *sim.DeviceConfig) { c.Channels = tree })
	for _, d := range []*sim.Device{dev, plat} {
		if err := d.Start(sctx); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := upper.WaitRegistered(sctx, proxyID); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "both catalogs stored", func() bool {
		return len(p.channels(liveDevice)) == len(cams) && len(p.channels(platTCP)) == len(tree)
	})
	ui(t, ctx, "load the console", chromedp.Navigate(p.consoleURL()))

	t.Run("overview", func(t *testing.T) {
		waitFor(t, ctx, "the upper platform shown registered",
			rowJS("#platforms", "id", upperID)+`?.querySelector(".registered").textContent === "yes"`)
		waitFor(t, ctx, "both devices counted online", `document.querySelector("#count-devices").textContent === "2 / 2"`)
		if got, want := pageText(ctx, "#count-channels"), fmt.Sprint(len(cams)+len(tree)); got != want {
			t.Errorf("channel count %q, want %s", got, want)
		}
	})

	t.Run("devices-and-tree", func(t *testing.T) {
		ui(t, ctx, "open devices", chromedp.Navigate(p.consoleURL()+"#/devices"))
		waitFor(t, ctx, "both devices listed", rowJS("#devices", "id", liveDevice)+` && `+rowJS("#devices", "id", platTCP))
		ui(t, ctx, "open the lower platform's tree", chromedp.Click(chromedp.JSPath(rowJS("#devices", "id", platTCP)+`.querySelector("a")`)))
		// civil code > business group > virtual organisation > camera
		var cam string
		for _, c := range tree {
			if c.Status != "" {
				cam = c.ID
				break
			}
		}
		waitFor(t, ctx, "a camera three levels deep in the tree",
			rowJS("#tree", "id", cam)+`?.querySelector(".tree-name").style.getPropertyValue("--depth") === "3"`)
		waitFor(t, ctx, "the civil code at the top", rowJS("#tree", "id", "340201")+`?.cells[2].textContent === "civil code"`)
		screenshot(t, ctx, "devices")

		ui(t, ctx, "open the camera device's channels", chromedp.Navigate(p.consoleURL()+"#/devices/"+liveDevice))
		waitFor(t, ctx, "the hostile name shown as text", rowJS("#tree", "id", cams[1].ID)+`?.cells[0].textContent === `+jsString(hostileName))
		waitFor(t, ctx, "the mapped ID the upper sees", rowJS("#tree", "id", cams[0].ID)+`?.cells[4].textContent.includes(`+jsString(mappedCam)+`)`)
		waitFor(t, ctx, "no element made from the name", `document.querySelector("#tree img") === null && document.title !== "pwned"`)
	})

	t.Run("session-appears-and-ends-with-bye", func(t *testing.T) {
		play, err := upper.Play(sctx, proxyID, mappedCam, sim.PlayOptions{Transport: "udp"})
		if err != nil {
			t.Fatal(err)
		}
		defer play.Close()
		if _, err := play.WaitPackets(sctx, 10); err != nil {
			t.Fatal(err)
		}
		ui(t, ctx, "open sessions", chromedp.Navigate(p.consoleURL()+"#/sessions"))
		row := rowJS("#sessions", "call", play.CallID())
		waitFor(t, ctx, "the session listed", row+`?.cells[2].textContent === `+jsString(upperID))
		waitFor(t, ctx, "a bitrate measured", row+`?.querySelector(".bitrate").textContent.includes("bit/s") && !`+row+`.querySelector(".bitrate").textContent.startsWith("0 ")`)
		waitFor(t, ctx, "packet loss shown", row+`?.querySelector(".loss").textContent.endsWith("%")`)
		screenshot(t, ctx, "sessions")
		ui(t, ctx, "open the overview", chromedp.Navigate(p.consoleURL()+"#/overview"))
		waitFor(t, ctx, "one session counted", `document.querySelector("#count-sessions").textContent === "1"`)
		waitFor(t, ctx, "throughput measured", `document.querySelector("#count-throughput").textContent.includes("bit/s")`)
		screenshot(t, ctx, "overview")

		ui(t, ctx, "open sessions", chromedp.Navigate(p.consoleURL()+"#/sessions"))
		waitFor(t, ctx, "the session listed", row+` !== undefined`)
		if err := play.Bye(sctx); err != nil {
			t.Fatal(err)
		}
		waitFor(t, ctx, "the session gone after BYE", row+` === undefined && !document.querySelector("#sessions-empty").hidden`)
	})

	t.Run("end-button", func(t *testing.T) {
		play, err := upper.Play(sctx, proxyID, mappedCam, sim.PlayOptions{Transport: "udp"})
		if err != nil {
			t.Fatal(err)
		}
		defer play.Close()
		row := rowJS("#sessions", "call", play.CallID())
		waitFor(t, ctx, "the session listed", row+` !== undefined`)
		ui(t, ctx, "click End", chromedp.Click(chromedp.JSPath(row+`.querySelector("button")`)))
		select {
		case <-play.Ended():
		case <-time.After(uiWait):
			t.Fatal("the upper got no BYE after End")
		}
		waitFor(t, ctx, "the session gone", row+` === undefined`)
	})

	t.Run("share-form", func(t *testing.T) {
		ui(t, ctx, "open manage", chromedp.Navigate(p.consoleURL()+"#/manage"))
		waitFor(t, ctx, "the platform to share to", `document.querySelector("#share-platform").value === `+jsString(upperID))
		setField(t, ctx, "#share-form", "map", "not-an-id = also-not")
		ui(t, ctx, "save a bad share", chromedp.Click(chromedp.ID("share-submit")))
		waitFor(t, ctx, "the API's 400 next to the form", `document.querySelector("#share-error").textContent.includes("map")`)

		setField(t, ctx, "#share-form", "map", "")
		setField(t, ctx, "#share-form", "all", "false")
		setField(t, ctx, "#share-form", "channels", cams[0].ID)
		ui(t, ctx, "save the share", chromedp.Click(chromedp.ID("share-submit")))
		waitFor(t, ctx, "the share saved", `document.querySelector("#share-ok").textContent.includes("sees 1 channels")`)
		for _, pl := range platformStates(p) {
			if pl.ID == upperID && pl.SharedChannels != 1 {
				t.Errorf("API: the platform shares %d channels after the form, want 1", pl.SharedChannels)
			}
		}
		screenshot(t, ctx, "manage")
		ui(t, ctx, "reset the share", chromedp.Click(chromedp.ID("share-reset")))
		waitFor(t, ctx, "the config file's share back", `document.querySelector("#share-ok").textContent.includes("config file's again")`)
	})

	// Needs POST /api/v1/platforms (the management API, issue 11 item 1).
	t.Run("add-platform-registers", func(t *testing.T) {
		second := newUpper(t, "127.0.0.1:0", func(c *sim.UpperConfig) { c.ID, c.Domain = upperB, upperB[:10] })
		ui(t, ctx, "open manage", chromedp.Navigate(p.consoleURL()+"#/manage"))
		for name, v := range map[string]string{"id": upperB, "address": second.Addr(), "transport": "udp",
			"password": upperPass, "keepalive_interval": "300ms", "retry_interval": "300ms"} {
			setField(t, ctx, "#platform-form", name, v)
		}
		ui(t, ctx, "add the platform", chromedp.Click(chromedp.ID("platform-submit")))
		waitFor(t, ctx, "the form's answer", `document.querySelector("#platform-ok").textContent !== "" || document.querySelector("#platform-error").textContent !== ""`)
		if e := pageText(ctx, "#platform-error"); e != "" {
			t.Fatalf("the form shows the API's error (POST /api/v1/platforms is the management API, issue 11 item 1): %s", e)
		}
		if _, err := second.WaitRegistered(ctxTimeout(t, uiWait), proxyID); err != nil {
			t.Fatalf("the proxy did not register to the platform added in the form: %v", err)
		}
		ui(t, ctx, "open the overview", chromedp.Navigate(p.consoleURL()+"#/overview"))
		waitFor(t, ctx, "the added platform shown registered",
			rowJS("#platforms", "id", upperB)+`?.querySelector(".registered").textContent === "yes"`)
	})
}

type platformState struct {
	ID             string `json:"id"`
	SharedChannels int    `json:"shared_channels"`
}

func platformStates(p *testProxy) []platformState {
	var out []platformState
	p.api("/api/v1/platforms", &out)
	return out
}

// TestConsoleAssets: the page loads without the token (it holds no data),
// under a CSP that keeps injected markup from running; data still needs it.
func TestConsoleAssets(t *testing.T) {
	p := startProxy(t, "", `
http: {listen: "127.0.0.1:0", token: "`+consoleToken+`"}
`)
	for path, ctype := range map[string]string{"/": "text/html", "/console/app.js": "javascript", "/console/app.css": "text/css"} {
		res, err := http.Get("http://" + p.httpLn.Addr().String() + path)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(res.Body)
		res.Body.Close()
		if res.StatusCode != http.StatusOK || !strings.Contains(res.Header.Get("Content-Type"), ctype) || len(body) == 0 {
			t.Errorf("GET %s without token: %s, %q, %d bytes; want 200 %s", path, res.Status, res.Header.Get("Content-Type"), len(body), ctype)
		}
		if csp := res.Header.Get("Content-Security-Policy"); !strings.Contains(csp, "script-src 'self'") {
			t.Errorf("GET %s: Content-Security-Policy %q lets other scripts run", path, csp)
		}
	}
	for _, path := range []string{"/api/v1/devices", "/console/", "/index.html"} {
		if code, _ := p.do("GET", path, ""); code != http.StatusUnauthorized {
			t.Errorf("GET %s without token: %d, want 401 (only the console's files are open)", path, code)
		}
	}
}

// TestConsoleToken: with http.token the page asks for it, refuses a wrong
// one, then shows data and keeps the token for the tab.
func TestConsoleToken(t *testing.T) {
	ctx := newBrowser(t)
	upper := newUpper(t, "127.0.0.1:0", nil)
	p := startProxy(t, "", upperPlatformYAML(upper.Addr(), "udp")+`
http: {listen: "127.0.0.1:0", token: "`+consoleToken+`"}
`)
	if _, err := upper.WaitRegistered(ctxTimeout(t, 10*time.Second), proxyID); err != nil {
		t.Fatal(err)
	}
	ui(t, ctx, "load the console (the page needs no token)", chromedp.Navigate(p.consoleURL()))
	ui(t, ctx, "the token asked for", chromedp.WaitVisible(chromedp.ID("token-form")))
	ui(t, ctx, "send a wrong token", chromedp.SendKeys(chromedp.ID("token-input"), "wrong"),
		chromedp.Click(chromedp.CSS(`#token-form button`)))
	waitFor(t, ctx, "the wrong token refused", `document.querySelector("#token-why").textContent.includes("refused") && !document.querySelector("#token-form").hidden`)
	ui(t, ctx, "send the token", chromedp.SendKeys(chromedp.ID("token-input"), consoleToken),
		chromedp.Click(chromedp.CSS(`#token-form button`)))
	platform := rowJS("#platforms", "id", upperID) + `?.querySelector(".registered").textContent === "yes"`
	waitFor(t, ctx, "data shown with the token", platform+` && document.querySelector("#token-form").hidden`)
	ui(t, ctx, "reload", chromedp.Reload())
	waitFor(t, ctx, "data shown after reload, no question", platform+` && document.querySelector("#token-form").hidden`)
}
