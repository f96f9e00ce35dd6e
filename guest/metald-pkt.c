/*
 * metald-pkt: the guest image's ICMPv6 test tool (guest/README.md). Busybox can
 * ping, but it cannot send a router advertisement nor show which ICMPv6
 * packets arrive, and the guest has no python or tcpdump. The end-to-end tests
 * use it to attack the port guards from inside a real VM and to watch, from a
 * second VM, what got through. Built statically by scripts/build-guest-image.sh
 * with Debian's gcc; a raw ICMPv6 socket, so the kernel fills in the checksum.
 *
 *   metald-pkt ra IFACE PREFIX [COUNT]    rogue RA to ff02::1: router lifetime 1800 s,
 *                                         prefix information PREFIX/64 (autonomous)
 *   metald-pkt rs IFACE                   router solicitation to ff02::2
 *   metald-pkt echo DST TEXT [SRC]        one echo request carrying TEXT, from SRC if given
 *   metald-pkt listen SECONDS [END]       print "RX echo src=A text=T" and
 *                                         "RX ra src=A prefix=P" for each packet seen;
 *                                         stops early on an echo whose text is END
 */
#include <arpa/inet.h>
#include <net/if.h>
#include <netinet/icmp6.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static int die(const char *what) {
  perror(what);
  return 1;
}

static int icmp_socket(void) {
  int s = socket(AF_INET6, SOCK_RAW, IPPROTO_ICMPV6);
  if (s < 0) exit(die("socket"));
  return s;
}

/* RA and RS are only valid with hop limit 255 (RFC 4861 6.1): send them as a router would. */
static int nd_send(const char *ifname, const char *dst, const void *buf, size_t len) {
  int s = icmp_socket();
  unsigned idx = if_nametoindex(ifname);
  int hops = 255;
  if (idx == 0) return die(ifname);
  if (setsockopt(s, IPPROTO_IPV6, IPV6_MULTICAST_IF, &idx, sizeof idx) < 0) return die("IPV6_MULTICAST_IF");
  if (setsockopt(s, IPPROTO_IPV6, IPV6_MULTICAST_HOPS, &hops, sizeof hops) < 0) return die("IPV6_MULTICAST_HOPS");
  struct sockaddr_in6 to = {.sin6_family = AF_INET6, .sin6_scope_id = idx};
  if (inet_pton(AF_INET6, dst, &to.sin6_addr) != 1) return die(dst);
  if (sendto(s, buf, len, 0, (struct sockaddr *)&to, sizeof to) < 0) return die("sendto");
  close(s);
  return 0;
}

static int send_ra(const char *ifname, const char *prefix, int count) {
  unsigned char pkt[sizeof(struct nd_router_advert) + sizeof(struct nd_opt_prefix_info)];
  struct nd_router_advert *ra = (struct nd_router_advert *)pkt;
  struct nd_opt_prefix_info *pi = (struct nd_opt_prefix_info *)(pkt + sizeof *ra);
  memset(pkt, 0, sizeof pkt);
  ra->nd_ra_type = ND_ROUTER_ADVERT;
  ra->nd_ra_curhoplimit = 64;
  ra->nd_ra_router_lifetime = htons(1800);
  pi->nd_opt_pi_type = ND_OPT_PREFIX_INFORMATION;
  pi->nd_opt_pi_len = 4;
  pi->nd_opt_pi_prefix_len = 64;
  pi->nd_opt_pi_flags_reserved = ND_OPT_PI_FLAG_ONLINK | ND_OPT_PI_FLAG_AUTO;
  pi->nd_opt_pi_valid_time = htonl(86400);
  pi->nd_opt_pi_preferred_time = htonl(14400);
  if (inet_pton(AF_INET6, prefix, &pi->nd_opt_pi_prefix) != 1) return die(prefix);
  for (int i = 0; i < count; i++) {
    if (nd_send(ifname, "ff02::1", pkt, sizeof pkt)) return 1;
    usleep(100000);
  }
  printf("SENT ra prefix=%s count=%d\n", prefix, count);
  return 0;
}

static int send_rs(const char *ifname) {
  struct nd_router_solicit rs = {.nd_rs_type = ND_ROUTER_SOLICIT};
  return nd_send(ifname, "ff02::2", &rs, sizeof rs);
}

static int send_echo(const char *dst, const char *text, const char *src) {
  unsigned char pkt[sizeof(struct icmp6_hdr) + 200];
  struct icmp6_hdr *h = (struct icmp6_hdr *)pkt;
  size_t n = strlen(text);
  if (n > 200) n = 200;
  memset(pkt, 0, sizeof pkt);
  h->icmp6_type = ICMP6_ECHO_REQUEST;
  h->icmp6_id = htons(0x6d64);
  memcpy(pkt + sizeof *h, text, n);
  int s = icmp_socket();
  if (src) {
    /* The kernel only lets us bind an address the guest has: the test adds the spoofed one first. */
    struct sockaddr_in6 me = {.sin6_family = AF_INET6};
    if (inet_pton(AF_INET6, src, &me.sin6_addr) != 1) return die(src);
    if (bind(s, (struct sockaddr *)&me, sizeof me) < 0) return die("bind");
  }
  struct sockaddr_in6 to = {.sin6_family = AF_INET6};
  if (inet_pton(AF_INET6, dst, &to.sin6_addr) != 1) return die(dst);
  if (sendto(s, pkt, sizeof *h + n, 0, (struct sockaddr *)&to, sizeof to) < 0) return die("sendto");
  close(s);
  printf("SENT echo dst=%s text=%s src=%s\n", dst, text, src ? src : "-");
  return 0;
}

static int listen_for(int seconds, const char *end) {
  int s = icmp_socket();
  struct icmp6_filter f;
  ICMP6_FILTER_SETBLOCKALL(&f);
  ICMP6_FILTER_SETPASS(ICMP6_ECHO_REQUEST, &f);
  ICMP6_FILTER_SETPASS(ND_ROUTER_ADVERT, &f);
  if (setsockopt(s, IPPROTO_ICMPV6, ICMP6_FILTER, &f, sizeof f) < 0) return die("ICMP6_FILTER");
  printf("LISTENING\n");
  fflush(stdout);
  time_t stop = time(NULL) + seconds;
  unsigned char buf[2048];
  char src[INET6_ADDRSTRLEN], pfx[INET6_ADDRSTRLEN];
  while (time(NULL) < stop) {
    struct pollfd p = {.fd = s, .events = POLLIN};
    if (poll(&p, 1, 200) <= 0) continue;
    struct sockaddr_in6 from;
    socklen_t fl = sizeof from;
    ssize_t n = recvfrom(s, buf, sizeof buf, 0, (struct sockaddr *)&from, &fl);
    if (n < (ssize_t)sizeof(struct icmp6_hdr)) continue;
    inet_ntop(AF_INET6, &from.sin6_addr, src, sizeof src);
    if (buf[0] == ICMP6_ECHO_REQUEST) {
      char text[201];
      size_t tl = (size_t)n - sizeof(struct icmp6_hdr);
      if (tl > 200) tl = 200;
      memcpy(text, buf + sizeof(struct icmp6_hdr), tl);
      text[tl] = 0;
      for (size_t i = 0; i < tl; i++) if (text[i] < 0x21 || text[i] > 0x7e) text[i] = '.';
      printf("RX echo src=%s text=%s\n", src, text);
      fflush(stdout);
      if (end && strcmp(text, end) == 0) break;
    } else if (buf[0] == ND_ROUTER_ADVERT && n >= (ssize_t)sizeof(struct nd_router_advert)) {
      printf("RX ra src=%s", src);
      for (ssize_t o = sizeof(struct nd_router_advert); o + 8 <= n && buf[o + 1] != 0; o += buf[o + 1] * 8) {
        if (buf[o] == ND_OPT_PREFIX_INFORMATION && o + 32 <= n) {
          inet_ntop(AF_INET6, buf + o + 16, pfx, sizeof pfx);
          printf(" prefix=%s/%u", pfx, buf[o + 2]);
        }
      }
      printf("\n");
      fflush(stdout);
    }
  }
  printf("LISTEN-END\n");
  return 0;
}

int main(int argc, char **argv) {
  setvbuf(stdout, NULL, _IOLBF, 0);
  if (argc >= 4 && strcmp(argv[1], "ra") == 0) return send_ra(argv[2], argv[3], argc > 4 ? atoi(argv[4]) : 1);
  if (argc == 3 && strcmp(argv[1], "rs") == 0) return send_rs(argv[2]);
  if (argc >= 4 && strcmp(argv[1], "echo") == 0) return send_echo(argv[2], argv[3], argc > 4 ? argv[4] : NULL);
  if (argc >= 3 && strcmp(argv[1], "listen") == 0) return listen_for(atoi(argv[2]), argc > 3 ? argv[3] : NULL);
  fprintf(stderr, "usage: metald-pkt ra IFACE PREFIX [COUNT] | rs IFACE | echo DST TEXT [SRC] | listen SECONDS [END]\n");
  return 2;
}
