package connection

import (
	"math"
	"time"
)

// slidingWindow is a sliding-window rate counter: the count of the previous
// fixed window and of the current one, the previous weighted by how much of it
// still overlaps the sliding window. O(1) memory, unlike the TS timestamp list,
// which is what keeps per-IP state small under floods.
//
// Times are manager offsets in nanoseconds. Not safe for concurrent use; the
// owning shard's mutex protects it.
type slidingWindow struct {
	start int64 // start of the current fixed window
	prev  uint32
	cur   uint32
}

// advance moves the fixed windows forward so that now falls in the current one.
func (w *slidingWindow) advance(now, size int64) {
	d := now - w.start
	if d < size {
		return
	}
	k := d / size
	if k == 1 {
		w.prev = w.cur
	} else {
		w.prev = 0
	}
	w.cur = 0
	w.start += k * size
}

// hit counts one attempt at now and returns the weighted estimate of
// attempts in the sliding window ending at now, this attempt included.
func (w *slidingWindow) hit(now, size int64) float64 {
	w.advance(now, size)
	if w.cur < math.MaxUint32 {
		w.cur++
	}
	return w.estimate(now, size)
}

// estimate returns prev*(1-elapsed/size) + cur; call after advance.
func (w *slidingWindow) estimate(now, size int64) float64 {
	elapsed := max(now-w.start, 0) // a clock stepping back must not inflate the weight
	weight := 1 - float64(elapsed)/float64(size)
	return float64(w.prev)*weight + float64(w.cur)
}

// retryAfter returns how long from now (ns) until one more hit would be
// within limit, that is until the estimate falls to limit-1 or below,
// assuming no attempt in between; call after hit or advance at now. It
// accounts for refused attempts, which count too: a client that hammered
// the limit has to wait for its own attempts to age out.
func (w *slidingWindow) retryAfter(now, size int64, limit int) int64 {
	room := float64(limit - 1)
	if room < 0 {
		return size
	}
	elapsed := max(now-w.start, 0)
	prev, cur := float64(w.prev), float64(w.cur)
	if cur <= room {
		// Within the current window: prev*(1-x/size)+cur <= room.
		if prev == 0 || prev+cur <= room {
			return 0
		}
		x := float64(size) * (1 - (room-cur)/prev)
		return max(int64(math.Ceil(x))+retrySlack-elapsed, 0)
	}
	// Only after the window rolls over, when cur becomes prev:
	// cur*(1-y/size) <= room, y measured from the next window's start.
	y := float64(size) * (1 - room/cur)
	return max(size-elapsed+int64(math.Ceil(y))+retrySlack, 0)
}

// retrySlack keeps retryAfter on the admitted side of the estimate's
// floating-point rounding.
const retrySlack = int64(time.Millisecond)
