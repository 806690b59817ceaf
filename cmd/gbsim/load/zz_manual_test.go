package load

import (
	"context"
	"os"
	"strconv"
	"testing"
	"time"
)

func TestZZManual(t *testing.T) {
	if os.Getenv("QL_N") == "" {
		t.Skip()
	}
	n, _ := strconv.Atoi(os.Getenv("QL_N"))
	c, _ := strconv.Atoi(os.Getenv("QL_C"))
	cfg := QueryConfig{DeviceID: testDeviceID, UpperID: testUpperID, Queries: n, Concurrency: c,
		ProxyID: "34020000002000000001", Password: "12345678", UpperListen: os.Getenv("QL_UPPER_LISTEN"),
		Lower: os.Getenv("QL_LOWER"), Upper: os.Getenv("QL_UPPER"), Direct: os.Getenv("QL_LOWER") == ""}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	q, err := NewQueryLoad(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	for i := 0; i < 2; i++ {
		res, err := q.Run(ctx)
		t.Logf("run %d: %+v err %v", i, res, err)
	}
}
