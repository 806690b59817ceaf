package store

import (
	"maps"
	"slices"
	"strings"
)

// layer is a set of not-yet-written operations. Invariant: every entry is newer than
// every prefix delete of its bucket that covers it (deletePrefix drops the covered
// entries), so applying the prefix deletes first and the entries second reproduces
// the original order of operations exactly.
type layer struct {
	buckets map[string]*bucketOps
	size    int // entries + prefix deletes, for batching and Stats
}

type bucketOps struct {
	entries       map[string][]byte // JSON value; nil marks a delete
	prefixDeletes map[string]struct{}
}

// op is one write to apply to the database, in the order returned by layer.ops.
type op struct {
	bucket, key string
	value       []byte // nil: delete key
	prefix      bool   // delete every key starting with key
}

func newLayer() *layer { return &layer{buckets: make(map[string]*bucketOps)} }

func (l *layer) bucket(name string) *bucketOps {
	b := l.buckets[name]
	if b == nil {
		b = &bucketOps{entries: make(map[string][]byte), prefixDeletes: make(map[string]struct{})}
		l.buckets[name] = b
	}
	return b
}

// set records a put (value != nil) or a delete (value == nil); the last one wins.
func (l *layer) set(bucket, key string, value []byte) {
	b := l.bucket(bucket)
	if _, ok := b.entries[key]; !ok {
		l.size++
	}
	b.entries[key] = value
}

func (l *layer) deletePrefix(bucket, prefix string) {
	b := l.bucket(bucket)
	for key := range b.entries {
		if strings.HasPrefix(key, prefix) {
			delete(b.entries, key)
			l.size--
		}
	}
	if _, ok := b.prefixDeletes[prefix]; !ok {
		b.prefixDeletes[prefix] = struct{}{}
		l.size++
	}
}

// merge replays newer on top of l, as if newer's operations had been made on l.
func (l *layer) merge(newer *layer) {
	for name, nb := range newer.buckets {
		for prefix := range nb.prefixDeletes {
			l.deletePrefix(name, prefix)
		}
		for key, value := range nb.entries {
			l.set(name, key, value)
		}
	}
}

// lookup reports the layer's verdict on a key: decided is false when the layer does
// not touch it; otherwise value is its JSON, or nil when the layer deleted it.
func (l *layer) lookup(bucket, key string) (value []byte, decided bool) {
	b := l.buckets[bucket]
	if b == nil {
		return nil, false
	}
	return b.lookup(key)
}

func (b *bucketOps) lookup(key string) (value []byte, decided bool) {
	if value, ok := b.entries[key]; ok {
		return value, true
	}
	for prefix := range b.prefixDeletes {
		if strings.HasPrefix(key, prefix) {
			return nil, true
		}
	}
	return nil, false
}

// ops lists the layer's operations: all prefix deletes first, then the entries sorted
// by bucket and key (bbolt inserts sorted keys much faster than random ones).
func (l *layer) ops() []op {
	out := make([]op, 0, l.size)
	names := slices.Sorted(maps.Keys(l.buckets))
	for _, name := range names {
		for _, prefix := range slices.Sorted(maps.Keys(l.buckets[name].prefixDeletes)) {
			out = append(out, op{bucket: name, key: prefix, prefix: true})
		}
	}
	for _, name := range names {
		b := l.buckets[name]
		for _, key := range slices.Sorted(maps.Keys(b.entries)) {
			out = append(out, op{bucket: name, key: key, value: b.entries[key]})
		}
	}
	return out
}
