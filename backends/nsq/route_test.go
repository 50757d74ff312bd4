package nsq

import (
	"testing"
	"time"

	"github.com/qgate/qgate/backends"
)

// TestGroupActive is the routing rule of one group without I/O: failover
// at once, failback only after the hold, draining and Unknown members.
func TestGroupActive(t *testing.T) {
	const hold = 5 * time.Second
	now := time.Unix(1000, 0)
	long, recent := now.Add(-time.Hour), now.Add(-time.Second)
	type member struct {
		health   backends.NodeState
		upSince  time.Time
		draining bool
	}
	up := func(since time.Time) member { return member{health: backends.NodeUp, upSince: since} }
	down := member{health: backends.NodeDown}
	unknown := member{health: backends.NodeUnknown}
	tests := []struct {
		name    string
		members []member
		current int // index of g.current, -1 for none
		want    int // index of the active member, -1 for none
	}{
		{"fresh pool: the primary", []member{up(recent), up(recent)}, -1, 0},
		{"primary down: the backup at once", []member{down, up(recent)}, 0, 1},
		{"primary back, not held: stay on the backup", []member{up(recent), up(long)}, 1, 1},
		{"primary held: failback", []member{up(long), up(long)}, 1, 0},
		{"backup of three held, primary not: failback to the second", []member{up(recent), up(long), up(long)}, 2, 1},
		{"current down, others not held: highest-priority up", []member{up(recent), up(recent), down}, 2, 0},
		{"primary draining: the backup", []member{{health: backends.NodeUp, upSince: long, draining: true}, up(long)}, 0, 1},
		{"all down", []member{down, down}, 0, -1},
		{"unknown counts as usable", []member{down, unknown}, 0, 1},
		{"up preferred to unknown", []member{unknown, up(recent)}, -1, 1},
		{"a lower-priority held member does not take over", []member{up(recent), up(long)}, 0, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			g := &group{}
			for i, m := range tc.members {
				g.members = append(g.members, &node{group: g, priority: i, health: m.health, upSince: m.upSince, draining: m.draining})
			}
			if tc.current >= 0 {
				g.current = g.members[tc.current]
			}
			got := g.active(now, hold)
			want := (*node)(nil)
			if tc.want >= 0 {
				want = g.members[tc.want]
			}
			if got != want {
				gotIdx := -1
				if got != nil {
					gotIdx = got.priority
				}
				t.Errorf("active = member %d, want %d", gotIdx, tc.want)
			}
		})
	}
}
