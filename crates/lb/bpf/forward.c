// SPDX-License-Identifier: GPL-2.0-only OR Apache-2.0
//
// halo's kernel data path: an sk_skb stream verdict program on one SOCKHASH map. Each socket of
// a proxied connection is in the map under the key of the OTHER socket's own address pair, so a
// segment arriving on one socket finds its partner under its own address pair and goes out of
// it (bpf_sk_redirect_hash, egress) without waking the daemon.
//
// The kernel does not charge a redirected segment to anybody's memory while it waits for room in
// the partner's send buffer: a reader that stops reading would let the writer fill the host's
// memory. So each direction has a state (halo_flow_state, under the same key): once the
// partner's send buffer is full, the direction is HELD and every later segment stays with the
// socket it arrived on (SK_PASS: queued to that socket, charged to its receive buffer, so TCP's
// window closes), where halo's user-space relay reads it and writes it on, in order, until the
// direction's end: a held direction does not go back to the kernel path. (It used to, once user
// space had written on every byte left with the socket, halo_flow_copied saying how many; under
// backpressure both ways that hand-back delivered 64 to 128 KiB a second time about once in
// seven gigabyte streams, and never once it was taken out: crates/lb/tests/kernel_join.rs. The
// map stays, written by user space, so that the maps keep their layout across `halo upgrade`.)
// `redirected` counts the bytes sent to the partner and `passed` those left with the socket,
// so that user space knows when the partner has taken everything sent before it writes.
//
// The layouts are `FlowKey` and `FlowState` in src/kernel/flows.rs; they change together.
// Built by build.rs with clang (-target bpf) and embedded in halo.

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#define AF_INET 2

// The address pair of the socket a segment arrived on, as that socket sees it. Ports in host
// order, addresses as the kernel keeps them (network order), IPv4 in the first word.
struct flow_key {
	__u32 family;
	__u32 local_port;
	__u32 remote_port;
	__u32 local_ip[4];
	__u32 remote_ip[4];
};

struct flow_state {
	__u64 redirected;
	__u32 held;
	__u32 reserved;
	__u64 passed;
};

struct {
	__uint(type, BPF_MAP_TYPE_SOCKHASH);
	__uint(key_size, sizeof(struct flow_key));
	__uint(value_size, sizeof(__u32));
	__uint(max_entries, 65536);
} halo_flows SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, struct flow_key);
	__type(value, struct flow_state);
	__uint(max_entries, 65536);
} halo_flow_state SEC(".maps");

// Bytes of a held direction that user space has read and written to the partner, by the same
// key: written by user space only (so that the program's own counters are never overwritten).
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, struct flow_key);
	__type(value, __u64);
	__uint(max_entries, 65536);
} halo_flow_copied SEC(".maps");

// A direction newly held: its key, so that halo's user-space relay takes it over at once.
struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 64 * 1024);
} halo_held SEC(".maps");

// The two fields of the kernel's socket read here, relocated to this kernel's layout (CO-RE).
struct sock {
	int sk_sndbuf;
	int sk_wmem_queued;
} __attribute__((preserve_access_index));

static __always_inline void flow_key_of(struct __sk_buff *skb, struct flow_key *key)
{
	key->family = skb->family;
	key->local_port = skb->local_port;
	key->remote_port = bpf_ntohl(skb->remote_port);
	if (skb->family == AF_INET) {
		key->local_ip[0] = skb->local_ip4;
		key->remote_ip[0] = skb->remote_ip4;
		return;
	}
	key->local_ip[0] = skb->local_ip6[0];
	key->local_ip[1] = skb->local_ip6[1];
	key->local_ip[2] = skb->local_ip6[2];
	key->local_ip[3] = skb->local_ip6[3];
	key->remote_ip[0] = skb->remote_ip6[0];
	key->remote_ip[1] = skb->remote_ip6[1];
	key->remote_ip[2] = skb->remote_ip6[2];
	key->remote_ip[3] = skb->remote_ip6[3];
}

// Whether the partner's send buffer is full (or the partner is gone).
static __always_inline int partner_full(struct flow_key *key)
{
	struct bpf_sock *partner = bpf_map_lookup_elem(&halo_flows, key);
	struct tcp_sock *tcp;
	int full = 1;

	if (!partner)
		return 1;
	tcp = bpf_skc_to_tcp_sock(partner);
	if (tcp) {
		struct sock *sk = (struct sock *)tcp;
		full = sk->sk_wmem_queued >= sk->sk_sndbuf;
	}
	bpf_sk_release(partner);
	return full;
}

SEC("sk_skb/stream_verdict")
int halo_forward(struct __sk_buff *skb)
{
	struct flow_key key = {};
	struct flow_state *state;

	// A segment without bytes is a bare FIN, which TCP has already taken note of (halo sees
	// it as a hang-up and passes it on once the partner has every byte). Sent on, it would
	// reach the partner after that shutdown and break it (EPIPE): it carries nothing, so it
	// goes nowhere.
	if (skb->len == 0)
		return SK_DROP;
	flow_key_of(skb, &key);
	state = bpf_map_lookup_elem(&halo_flow_state, &key);
	// SK_PASS without a redirect leaves the segment with this socket: nothing is dropped here.
	if (!state)
		return SK_PASS;
	if (state->held) {
		// User space relays the rest of this direction.
		state->passed += skb->len;
		return SK_PASS;
	}
	if (partner_full(&key) || bpf_sk_redirect_hash(skb, &halo_flows, &key, 0) != SK_PASS) {
		state->held = 1;
		state->passed += skb->len;
		// Lost when the ring is full: halo also looks at the state now and then.
		bpf_ringbuf_output(&halo_held, &key, sizeof(key), 0);
		return SK_PASS;
	}
	state->redirected += skb->len;
	return SK_PASS;
}

// The kernel lets only a GPL-compatible program read its socket structure (sk_wmem_queued):
// this one file is offered under the GPL too (the rest of halo is Apache-2.0 only).
char _license[] SEC("license") = "GPL";
