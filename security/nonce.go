package security

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"sync"
	"sync/atomic"
	"time"
)

// Nonces are self-validating, so issuing a challenge stores nothing: a flood of
// REGISTERs (even from spoofed UDP sources, which never see our 401) cannot
// grow memory. A nonce is one AES-128 block under a random per-process key
// (encode-then-encipher):
//
//	plaintext = issue time (4 bytes, Unix seconds) | counter (4) | algorithm (1) | zeros (7)
//
// Decrypting a nonce and finding the zeros and the expected algorithm proves we
// issued it (forging one takes ~2^56 tries); the counter makes every nonce
// unique; the ciphertext is indistinguishable from random. The 32 hex digits
// match what GB devices see from other platforms (the seed's Hikvision sample).
// Only nonces that come back in a Verify are remembered, in usedNonces.
type nonceCodec struct {
	block   cipher.Block
	counter atomic.Uint32
}

type nonceKey [aes.BlockSize]byte

func newNonceCodec() *nonceCodec {
	var key [16]byte
	rand.Read(key[:])                 // never fails since Go 1.24
	block, _ := aes.NewCipher(key[:]) // cannot fail: the key is 16 bytes
	return &nonceCodec{block: block}
}

func (n *nonceCodec) issue(now time.Time, alg algorithm) string {
	var plain, sealed nonceKey
	binary.BigEndian.PutUint32(plain[0:4], uint32(now.Unix()))
	binary.BigEndian.PutUint32(plain[4:8], n.counter.Add(1))
	plain[8] = byte(alg)
	n.block.Encrypt(sealed[:], plain[:])
	return hex.EncodeToString(sealed[:])
}

// open returns the nonce's bytes and issue time (Unix seconds) if we issued it
// for alg; a nonce answered with another algorithm is not ours (no downgrade).
func (n *nonceCodec) open(nonce string, alg algorithm) (key nonceKey, issued int64, ok bool) {
	if len(nonce) != 2*len(key) {
		return key, 0, false
	}
	if _, err := hex.Decode(key[:], []byte(nonce)); err != nil {
		return key, 0, false
	}
	var plain nonceKey
	n.block.Decrypt(plain[:], key[:])
	if plain[8] != byte(alg) {
		return key, 0, false
	}
	for _, b := range plain[9:] {
		if b != 0 {
			return key, 0, false
		}
	}
	return key, int64(binary.BigEndian.Uint32(plain[0:4])), true
}

// usedNonces remembers nonces already answered, for replay protection, in a
// set bounded by max entries. Entries leave in arrival order once their nonce
// has expired anyway, so cleaning is amortised O(1) per Verify with no timers.
// When the set is full the oldest entry is evicted and every nonce issued at or
// before that one's issue time becomes stale (the low-water mark), so eviction
// can never re-enable a replay: under a flood, clients just get stale=true.
type usedNonces struct {
	mu        sync.Mutex
	ttl       int64 // seconds
	max       int
	set       map[nonceKey]struct{}
	queue     fifo[usedNonce] // arrival order
	watermark int64           // nonces issued at or before this Unix second are stale
}

type usedNonce struct {
	key    nonceKey
	issued int64
}

func newUsedNonces(ttl time.Duration, max int) *usedNonces {
	return &usedNonces{
		ttl:       int64(ttl / time.Second),
		max:       max,
		set:       make(map[nonceKey]struct{}),
		watermark: -1,
	}
}

// consume marks a nonce as used; false means it was expired, below the
// low-water mark or used before.
func (u *usedNonces) consume(key nonceKey, issued int64, now time.Time) bool {
	nowSec := now.Unix()
	u.mu.Lock()
	defer u.mu.Unlock()
	for u.queue.len() > 0 && nowSec-u.queue.front().issued > u.ttl {
		delete(u.set, u.queue.pop().key)
	}
	if nowSec-issued > u.ttl || issued <= u.watermark {
		return false
	}
	if _, used := u.set[key]; used {
		return false
	}
	if len(u.set) >= u.max {
		oldest := u.queue.pop()
		delete(u.set, oldest.key)
		u.watermark = max(u.watermark, oldest.issued)
		if issued <= u.watermark {
			return false
		}
	}
	u.set[key] = struct{}{}
	u.queue.push(usedNonce{key: key, issued: issued})
	return true
}

// fifo is a queue with amortised O(1) pops.
type fifo[T any] struct {
	items []T // live entries are items[head:]
	head  int
}

func (q *fifo[T]) len() int { return len(q.items) - q.head }
func (q *fifo[T]) front() T { return q.items[q.head] }
func (q *fifo[T]) push(v T) { q.items = append(q.items, v) }

func (q *fifo[T]) pop() T {
	v := q.items[q.head]
	var zero T
	q.items[q.head] = zero // let go of what the entry references
	q.head++
	// Compact once the dead prefix dominates.
	if q.head > len(q.items)/2 {
		q.items = q.items[:copy(q.items, q.items[q.head:])]
		q.head = 0
	}
	return v
}
