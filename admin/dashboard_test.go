package admin_test

import (
	"context"
	"os/exec"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/gosmartproxy/smartproxy/admin"
	"github.com/stretchr/testify/require"
)

// TestDashboardShowsLiveNumbers loads the dashboard in headless Chromium,
// enters the token the page asks for, and watches the route's running
// total of connections follow real traffic without a page reload.
func TestDashboardShowsLiveNumbers(t *testing.T) {
	if _, err := exec.LookPath("chromium"); err != nil {
		t.Skip("chromium not installed (apt-get install chromium): the dashboard test needs a browser")
	}
	e := startEnv(t, admin.Config{Token: testToken})
	for range 3 {
		e.echoThrough(t, "hello")
	}

	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	opts := append(chromedp.DefaultExecAllocatorOptions[:], chromedp.NoSandbox, chromedp.DisableGPU)
	actx, cancelAlloc := chromedp.NewExecAllocator(ctx, opts...)
	defer cancelAlloc()
	bctx, cancelBrowser := chromedp.NewContext(actx)
	defer cancelBrowser()

	require.NoError(t, chromedp.Do(bctx,
		chromedp.EmulateViewport(1200, 800),
		chromedp.Navigate(e.base+"/"),
		chromedp.WaitVisible(chromedp.CSS("#tokenform")), // 401: the page asks for the token
		chromedp.SendKeys(chromedp.CSS("#token"), testToken),
		chromedp.Click(chromedp.CSS("#tokenform button")), // the page keeps the token for its requests
	))
	// cell reads the route table's first row, column n, once it reads want.
	waitCell := func(col int, want string) {
		t.Helper()
		_, err := chromedp.Run(bctx, chromedp.Poll[bool](
			`(() => { const td = document.querySelector("#routes tbody tr td:nth-child(`+itoa(col)+`)");
			          return td !== null && td.textContent === `+quote(want)+`; })()`,
			chromedp.WithPollingTimeout(20*time.Second), chromedp.WithPollingInterval(100*time.Millisecond)))
		if err != nil {
			page, _ := chromedp.Run(bctx, chromedp.Text(chromedp.CSS("body")))
			t.Fatalf("route table column %d never read %q: %v; the page reads:\n%s", col, want, err, page)
		}
	}
	waitCell(1, "tcp")
	waitCell(2, "3") // open
	waitCell(3, "3") // since start
	status, err := chromedp.Run(bctx, chromedp.Text(chromedp.CSS("#status")))
	require.NoError(t, err)
	require.Equal(t, "live", status)

	// More traffic: the same page, polling, shows it.
	closeOne := e.echoThrough(t, "hello")
	e.echoThrough(t, "world")
	closeOne()
	waitCell(3, "5")
	waitCell(2, "4")
	active, err := chromedp.Run(bctx, chromedp.Text(chromedp.CSS("#active")))
	require.NoError(t, err)
	require.Equal(t, "4", active)
	clients, err := chromedp.Run(bctx, chromedp.Text(chromedp.CSS("#clients tbody")))
	require.NoError(t, err)
	require.Contains(t, clients, "127.0.0.1")
}

func itoa(n int) string { return string(rune('0' + n)) }

func quote(s string) string { return `"` + s + `"` }
