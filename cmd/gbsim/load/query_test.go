package load

import (
	"context"
	"testing"
	"time"
)

const (
	testDeviceID = "34020000001320000001"
	testUpperID  = "44010000002000000001"
)

func TestRunQueriesDirect(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	const n = 2000
	res, err := RunQueries(ctx, QueryConfig{Direct: true, DeviceID: testDeviceID, UpperID: testUpperID, Queries: n, Concurrency: 64})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%+v", res)
	if res.Completed != n || res.Failed != 0 || res.WrongSN != 0 {
		t.Fatalf("got %+v, want %d completed, none failed or mismatched", res, n)
	}
	if res.P50 <= 0 || res.P99 < res.P50 || res.P99 > res.Elapsed || res.Rate <= 0 {
		t.Errorf("insane figures: %+v", res)
	}
}
