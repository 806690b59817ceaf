// Package security holds what gbproxy needs to trust no claimed ID on the
// border between security zones. Every piece is transport-free: callers pass
// header values, sipgo requests and source addresses, and map the sentinel
// errors to SIP answers (given beside each error).
//
//   - Digest authentication (RFC 2617, RFC 7616, RFC 3261 §22, GB/T 28181
//     §9.1). DigestServer challenges the cameras, NVRs and lower platforms
//     that REGISTER to us and verifies their answers: stateless nonces,
//     replay protection, a digest username bound to the From ID, secrets as
//     plain passwords or HA1s. Failures lock out per (ID, source IP), per
//     source IP and per ID across addresses (LockoutConfig), so rotating the
//     username or the address does not escape the lockout, while the address
//     an ID is registered from keeps working. Authorize answers the
//     challenges of upper platforms we register to.
//   - RateLimiter: token buckets per source for unauthenticated traffic, with
//     a bounded key table so a flood of sources cannot grow memory.
//   - Notary: the GB/T 28181 signalling digest (SIP信令认证): a Note header,
//     `Digest nonce="<base64 of H(From+To+Call-ID+Date+seed+body)>",
//     algorithm=MD5|SHA-256|SM3`, with a Date header checked against a
//     window and nonces remembered to refuse replays.
//   - Monitor-User-Identity: the chain of gateway IDs a request crossed,
//     grown by one segment per hop and checked for loops and hop count.
package security
