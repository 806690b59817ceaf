package store

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"
	bolt "go.etcd.io/bbolt"
)

// logBuffer collects log output from the flusher goroutine and the test.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *logBuffer) count(substr string) int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return strings.Count(b.buf.String(), substr)
}

func open(t *testing.T, path string, opts Options) *Store {
	t.Helper()
	s, err := Open(path, opts)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

// quiet opens a store whose background flusher never runs on its own, so the test
// decides what is pending and what is on disk.
func quiet(t *testing.T, path string) *Store {
	return open(t, path, Options{FlushInterval: time.Hour, MaxBatch: 1 << 20})
}

func flush(t *testing.T, s *Store) {
	t.Helper()
	if err := s.Flush(); err != nil {
		t.Fatalf("Flush: %v", err)
	}
}

func wantValue(t *testing.T, s *Store, bucket, key, want string) {
	t.Helper()
	var got string
	found, err := s.Get(bucket, key, &got)
	if err != nil {
		t.Fatalf("Get %s/%s: %v", bucket, key, err)
	}
	if !found || got != want {
		t.Fatalf("Get %s/%s = %q, found=%v; want %q", bucket, key, got, found, want)
	}
}

func wantMissing(t *testing.T, s *Store, bucket, key string) {
	t.Helper()
	var got string
	found, err := s.Get(bucket, key, &got)
	if err != nil {
		t.Fatalf("Get %s/%s: %v", bucket, key, err)
	}
	if found {
		t.Fatalf("Get %s/%s = %q; want not found", bucket, key, got)
	}
}

// listing returns the bucket as ForEach presents it: "key=value" in order.
func listing(t *testing.T, s *Store, bucket string) string {
	t.Helper()
	var out []string
	err := s.ForEach(bucket, func(key string, raw []byte) error {
		var v string
		if err := json.Unmarshal(raw, &v); err != nil {
			return err
		}
		out = append(out, key+"="+v)
		return nil
	})
	if err != nil {
		t.Fatalf("ForEach %s: %v", bucket, err)
	}
	return strings.Join(out, " ")
}

func TestPutGetDeleteAcrossPendingAndDisk(t *testing.T) {
	s := quiet(t, filepath.Join(t.TempDir(), "gb.db"))

	wantMissing(t, s, "devices", "a")
	s.Put("devices", "a", "1")
	wantValue(t, s, "devices", "a", "1") // pending only
	if got := s.Stats().Pending; got != 1 {
		t.Fatalf("Pending = %d, want 1", got)
	}
	flush(t, s)
	if st := s.Stats(); st.Pending != 0 || st.Flushes != 1 || st.LastError != nil {
		t.Fatalf("Stats after flush = %+v", st)
	}
	wantValue(t, s, "devices", "a", "1") // disk only

	s.Delete("devices", "a")
	wantMissing(t, s, "devices", "a") // pending delete hides disk
	flush(t, s)
	wantMissing(t, s, "devices", "a")

	s.Delete("devices", "never-written") // a delete in a bucket or of a key that is not on disk is harmless
	s.Delete("no-such-bucket", "x")
	flush(t, s)
}

func TestLastOperationOnAKeyWins(t *testing.T) {
	s := quiet(t, filepath.Join(t.TempDir(), "gb.db"))

	s.Put("devices", "k", "first")
	s.Delete("devices", "k")
	s.Put("devices", "k", "last")
	wantValue(t, s, "devices", "k", "last")
	flush(t, s)
	wantValue(t, s, "devices", "k", "last")

	s.Put("devices", "k", "again")
	s.Delete("devices", "k")
	wantMissing(t, s, "devices", "k")
	flush(t, s)
	wantMissing(t, s, "devices", "k")
}

func TestDeletePrefixKeepsLaterPuts(t *testing.T) {
	path := filepath.Join(t.TempDir(), "gb.db")
	s := quiet(t, path)
	s.Put("channels", "dev1/ch1", "on-disk")
	s.Put("channels", "dev1/ch2", "on-disk")
	s.Put("channels", "dev10/ch1", "other device") // shares "dev1" but not "dev1/"
	s.Put("channels", "dev2/ch1", "other device")
	flush(t, s)

	s.Put("channels", "dev1/ch3", "pending, then deleted")
	s.DeletePrefix("channels", "dev1/")
	s.Put("channels", "dev1/ch4", "after the delete")
	s.Put("channels", "dev1/ch1", "re-added")

	check := func(s *Store) {
		t.Helper()
		wantMissing(t, s, "channels", "dev1/ch2")
		wantMissing(t, s, "channels", "dev1/ch3")
		wantValue(t, s, "channels", "dev1/ch1", "re-added")
		wantValue(t, s, "channels", "dev1/ch4", "after the delete")
		want := "dev1/ch1=re-added dev1/ch4=after the delete dev10/ch1=other device dev2/ch1=other device"
		if got := listing(t, s, "channels"); got != want {
			t.Fatalf("ForEach:\n got %s\nwant %s", got, want)
		}
	}
	check(s) // pending over disk
	flush(t, s)
	check(s) // disk only
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	check(quiet(t, path))
}

func TestDeletePrefixEmptyClearsBucket(t *testing.T) {
	s := quiet(t, filepath.Join(t.TempDir(), "gb.db"))
	s.Put("uppers", "a", "1")
	s.Put("uppers", "b", "2")
	s.Put("devices", "a", "kept")
	flush(t, s)
	s.DeletePrefix("uppers", "")
	flush(t, s)
	if got := listing(t, s, "uppers"); got != "" {
		t.Fatalf("uppers after DeletePrefix(\"\") = %q, want empty", got)
	}
	wantValue(t, s, "devices", "a", "kept")
}

func TestForEachMergesPendingOverDisk(t *testing.T) {
	s := quiet(t, filepath.Join(t.TempDir(), "gb.db"))
	for _, k := range []string{"b", "d", "f"} {
		s.Put("devices", k, "disk-"+k)
	}
	flush(t, s)
	s.Put("devices", "a", "new")   // before all disk keys
	s.Put("devices", "d", "newer") // overrides disk
	s.Delete("devices", "f")       // hides disk
	s.Put("devices", "e", "new")   // between disk keys
	s.Put("devices", "z", "new")   // after all disk keys
	s.Delete("devices", "nothing") // deleting an absent key adds nothing

	want := "a=new b=disk-b d=newer e=new z=new"
	if got := listing(t, s, "devices"); got != want {
		t.Fatalf("ForEach:\n got %s\nwant %s", got, want)
	}
	if got := listing(t, s, "empty"); got != "" {
		t.Fatalf("ForEach of an unknown bucket = %q, want nothing", got)
	}

	stop := errors.New("stop")
	calls := 0
	err := s.ForEach("devices", func(string, []byte) error { calls++; return stop })
	if !errors.Is(err, stop) || calls != 1 {
		t.Fatalf("ForEach with failing fn: err=%v after %d calls; want the fn error after 1 call", err, calls)
	}
}

func TestDataSurvivesRestart(t *testing.T) {
	path := filepath.Join(t.TempDir(), "nested", "dir", "gb.db") // parent directories are created
	s := quiet(t, path)
	type device struct {
		ID        string
		Transport string
		Channels  int
	}
	for i := range 50 {
		s.Put("devices", strconv.Itoa(i), device{ID: strconv.Itoa(i), Transport: "TCP", Channels: i})
	}
	s.Put("uppers", "up1", "registered")
	if err := s.Close(); err != nil { // Close flushes what is pending
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}

	s = quiet(t, path)
	var d device
	found, err := s.Get("devices", "42", &d)
	if err != nil || !found || d != (device{ID: "42", Transport: "TCP", Channels: 42}) {
		t.Fatalf("after restart Get devices/42 = %+v found=%v err=%v", d, found, err)
	}
	n := 0
	if err := s.ForEach("devices", func(string, []byte) error { n++; return nil }); err != nil || n != 50 {
		t.Fatalf("after restart ForEach saw %d devices (err %v), want 50", n, err)
	}
	wantValue(t, s, "uppers", "up1", "registered")
}

func TestUseAfterClose(t *testing.T) {
	var logs logBuffer
	s := open(t, filepath.Join(t.TempDir(), "gb.db"), Options{Logger: zerolog.New(&logs)})
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s.Put("devices", "a", "1")
	s.Delete("devices", "a")
	s.DeletePrefix("devices", "a")
	if n := logs.count("write after Close ignored"); n != 3 {
		t.Fatalf("logged %d write-after-Close errors, want 3:\n%s", n, logs.buf.String())
	}
	var v string
	if _, err := s.Get("devices", "a", &v); !errors.Is(err, ErrClosed) {
		t.Fatalf("Get after Close: %v, want ErrClosed", err)
	}
	if err := s.ForEach("devices", func(string, []byte) error { return nil }); !errors.Is(err, ErrClosed) {
		t.Fatalf("ForEach after Close: %v, want ErrClosed", err)
	}
	if err := s.Flush(); !errors.Is(err, ErrClosed) {
		t.Fatalf("Flush after Close: %v, want ErrClosed", err)
	}
}

func TestInvalidWritesAreRejectedWithoutBlockingOthers(t *testing.T) {
	var logs logBuffer
	s := open(t, filepath.Join(t.TempDir(), "gb.db"), Options{FlushInterval: time.Hour, Logger: zerolog.New(&logs)})
	s.Put("meta", schemaVersionKey, 99) // must not overwrite the schema version
	s.Put("", "k", "v")
	s.Put("devices", "", "v")
	s.Put("devices", strings.Repeat("k", bolt.MaxKeySize+1), "v")
	s.Put("devices", "chan", make(chan int)) // not JSON-encodable
	s.Put("devices", "good", "v")
	if n := logs.count(`"level":"error"`); n != 5 {
		t.Fatalf("logged %d errors, want 5:\n%s", n, logs.buf.String())
	}
	if got := s.Stats().Pending; got != 1 {
		t.Fatalf("Pending = %d, want only the valid write", got)
	}
	flush(t, s)
	wantValue(t, s, "devices", "good", "v")
	wantMissing(t, s, "devices", "chan")
}

func writeSchemaVersion(t *testing.T, path, version string) {
	t.Helper()
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	err = db.Update(func(tx *bolt.Tx) error {
		b, err := tx.CreateBucketIfNotExists([]byte(metaBucket))
		if err != nil {
			return err
		}
		return b.Put([]byte(schemaVersionKey), []byte(version))
	})
	if err != nil {
		t.Fatal(err)
	}
}

func TestSchemaVersion(t *testing.T) {
	dir := t.TempDir()

	fresh := filepath.Join(dir, "fresh.db")
	s := quiet(t, fresh)
	var v int
	if found, err := s.Get(metaBucket, schemaVersionKey, &v); err != nil || !found || v != schemaVersion {
		t.Fatalf("new store schema version = %d found=%v err=%v; want %d", v, found, err, schemaVersion)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	quiet(t, fresh) // reopening the current version works

	for _, tc := range []struct{ name, onDisk, wantErr string }{
		{"newer", strconv.Itoa(schemaVersion + 1), "has schema version 2 but this gbproxy supports up to 1"},
		{"garbage", "v1", `unreadable schema version "v1"`},
		{"older without migration", "0", "migrate schema version 0 to 1: no migration from schema version 0"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(dir, strings.ReplaceAll(tc.name, " ", "_")+".db")
			writeSchemaVersion(t, path, tc.onDisk)
			s, err := Open(path, Options{})
			if err == nil {
				s.Close()
				t.Fatal("Open succeeded, want refusal")
			}
			if !strings.Contains(err.Error(), tc.wantErr) || !strings.Contains(err.Error(), path) {
				t.Fatalf("Open error = %q, want it to name %s and contain %q", err, path, tc.wantErr)
			}
			// Open released the refused file: writing it again gets the lock.
			writeSchemaVersion(t, path, tc.onDisk)
		})
	}
}

func TestSecondOpenOfSameFileFailsWithLockError(t *testing.T) {
	t.Parallel() // waits for the 1s lock timeout
	path := filepath.Join(t.TempDir(), "gb.db")
	quiet(t, path)
	start := time.Now()
	s, err := Open(path, Options{})
	if err == nil {
		s.Close()
		t.Fatal("second Open of a locked store succeeded")
	}
	want := fmt.Sprintf("store %s is locked by another process", path)
	if !strings.Contains(err.Error(), want) {
		t.Fatalf("second Open error = %q, want it to contain %q", err, want)
	}
	if waited := time.Since(start); waited > 3*lockTimeout {
		t.Fatalf("second Open took %s, want about %s", waited, lockTimeout)
	}
}

func TestMaxBatchTriggersEarlyFlush(t *testing.T) {
	s := open(t, filepath.Join(t.TempDir(), "gb.db"), Options{FlushInterval: time.Hour, MaxBatch: 10})
	for i := range 10 {
		s.Put("devices", strconv.Itoa(i), i)
	}
	waitFor(t, "a flush triggered by MaxBatch", func() bool {
		st := s.Stats()
		return st.Flushes > 0 && st.Pending == 0
	})
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(3 * time.Second); !cond(); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}

// A file size limit stands in for a full disk: flushes fail until the queued data
// shrinks again, nothing is lost meanwhile, and a batch split over several
// transactions is retried as a whole.
func TestFlushFailureKeepsRecordsAndRetries(t *testing.T) {
	path := filepath.Join(t.TempDir(), "gb.db")
	var logs logBuffer
	s := open(t, path, Options{
		FlushInterval: 10 * time.Millisecond,
		MaxBatch:      10,
		Logger:        zerolog.New(&logs),
		maxFileSize:   512 << 10,
	})
	big := strings.Repeat("x", 10<<10)
	for i := range 100 { // about 1 MiB: the first transactions fit, later ones do not
		s.Put("devices", fmt.Sprintf("big%03d", i), big)
	}
	waitFor(t, "the flush failure log line", func() bool { return logs.count("store: flush failed") > 0 })
	if err := s.Flush(); err == nil || !strings.Contains(err.Error(), path) {
		t.Fatalf("Flush with a full file = %v, want an error naming %s", err, path)
	}
	if st := s.Stats(); st.Pending == 0 || st.LastError == nil {
		t.Fatalf("Stats while failing = %+v, want records pending and the error", st)
	}
	for i := range 100 { // whether on disk or still queued, nothing is lost
		wantValue(t, s, "devices", fmt.Sprintf("big%03d", i), big)
	}

	time.Sleep(100 * time.Millisecond) // several more failing ticks
	if n := logs.count("store: flush failed"); n != 1 {
		t.Fatalf("logged %d flush failures, want 1 while the failure lasts", n)
	}

	// Writes made while failing go on top of the retained batch, in order.
	s.DeletePrefix("devices", "big")
	s.Put("devices", "big050", "small again")
	s.Put("devices", "small", "fits")
	wantMissing(t, s, "devices", "big000")
	if got := listing(t, s, "devices"); got != "big050=small again small=fits" {
		t.Fatalf("ForEach while failing = %q", got)
	}
	waitFor(t, "the recovery log line", func() bool { return logs.count("store: flush recovered") == 1 })
	if st := s.Stats(); st.Pending != 0 || st.LastError != nil {
		t.Fatalf("Stats after recovery = %+v", st)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	s = quiet(t, path)
	if got := listing(t, s, "devices"); got != "big050=small again small=fits" {
		t.Fatalf("after restart devices = %q", got)
	}
}

// Each writer owns its keys and checks that it always reads back its own last
// write while flushes run concurrently; the final state must match a model.
func TestConcurrentUse(t *testing.T) {
	path := filepath.Join(t.TempDir(), "gb.db")
	s := open(t, path, Options{FlushInterval: time.Millisecond, MaxBatch: 7})
	const writers, opsPerWriter = 8, 400
	models := make([]map[string]string, writers)
	errs := make(chan error, writers+1)
	var wg sync.WaitGroup
	for w := range writers {
		model := map[string]string{}
		models[w] = model
		wg.Go(func() {
			for i := range opsPerWriter {
				key := fmt.Sprintf("w%d/%d", w, i%37)
				switch {
				case i%97 == 96:
					s.DeletePrefix("ch", fmt.Sprintf("w%d/", w))
					clear(model)
				case i%5 == 4:
					s.Delete("ch", key)
					delete(model, key)
				default:
					val := strconv.Itoa(i)
					s.Put("ch", key, val)
					model[key] = val
				}
				var got string
				found, err := s.Get("ch", key, &got)
				if want, ok := model[key]; err != nil || found != ok || got != want {
					errs <- fmt.Errorf("writer %d op %d: Get %s = %q found=%v err=%w; want %q found=%v", w, i, key, got, found, err, want, ok)
					return
				}
			}
		})
	}
	wg.Go(func() { // readers and explicit flushes alongside the writers
		for range 50 {
			if err := s.ForEach("ch", func(string, []byte) error { return nil }); err != nil {
				errs <- err
				return
			}
			if err := s.Flush(); err != nil {
				errs <- err
				return
			}
			_ = s.Stats()
		}
	})
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}

	var want []string
	for w := range writers {
		for key, val := range models[w] {
			want = append(want, key+"="+val)
		}
	}
	check := func(s *Store) {
		t.Helper()
		got := strings.Fields(listing(t, s, "ch"))
		if len(got) != len(want) {
			t.Fatalf("ForEach has %d keys, model %d", len(got), len(want))
		}
		for _, kv := range want {
			key, val, _ := strings.Cut(kv, "=")
			wantValue(t, s, "ch", key, val)
		}
	}
	check(s)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	check(quiet(t, path))
}

// A backup taken while the store is written to opens as a store holding
// everything written before the call, records still pending included.
func TestBackupWhileRunningRestores(t *testing.T) {
	dir := t.TempDir()
	s := quiet(t, filepath.Join(dir, "gb.db"))
	for i := range 100 {
		s.Put("devices", fmt.Sprintf("dev%03d", i), "on disk")
	}
	flush(t, s)
	s.Put("devices", "pending", "not yet flushed")

	stop := make(chan struct{})
	writerDone := make(chan struct{})
	go func() { // a busy registry keeps writing during the copy
		defer close(writerDone)
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			s.Put("churn", strconv.Itoa(i%50), i)
			if i%10 == 0 {
				_ = s.Flush()
			}
		}
	}()
	var buf bytes.Buffer
	n, err := s.Backup(&buf)
	close(stop)
	<-writerDone
	if err != nil || n != int64(buf.Len()) || n == 0 {
		t.Fatalf("Backup: %d bytes (buffer %d), err %v", n, buf.Len(), err)
	}

	copyPath := filepath.Join(dir, "restored.db")
	if err := os.WriteFile(copyPath, buf.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	restored := quiet(t, copyPath)
	wantValue(t, restored, "devices", "dev042", "on disk")
	wantValue(t, restored, "devices", "pending", "not yet flushed")
	count := 0
	if err := restored.ForEach("devices", func(string, []byte) error { count++; return nil }); err != nil || count != 101 {
		t.Fatalf("restored copy has %d devices (err %v), want 101", count, err)
	}

	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Backup(io.Discard); !errors.Is(err, ErrClosed) {
		t.Fatalf("Backup after Close: %v, want ErrClosed", err)
	}
}
