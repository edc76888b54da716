package archive

import (
	"encoding/binary"
	"encoding/hex"
)

// TaskSet is a set of task ids (task.TaskID: 32 hex digits) in 16 bytes
// each, in an open-addressing table kept at most 3/4 full: about 21 to 43
// bytes per id, so a million-task job's ids take under 45 MB. Ids are
// SHA-256 prefixes, so their first 8 bytes are already a good hash. The
// zero value is an empty set. Not safe for concurrent use.
type TaskSet struct {
	slots [][16]byte
	used  []bool
	n     int
}

// parseID returns id's 16 bytes; ok is false for a string that is not 32
// hex digits.
func parseID(id string) (b [16]byte, ok bool) {
	if len(id) != 32 {
		return b, false
	}
	if _, err := hex.Decode(b[:], []byte(id)); err != nil {
		return b, false
	}
	return b, true
}

// Add inserts id and reports whether it was new. An id that is not 32 hex
// digits is never added (false).
func (s *TaskSet) Add(id string) bool {
	b, ok := parseID(id)
	if !ok {
		return false
	}
	if 4*(s.n+1) > 3*len(s.slots) {
		s.grow()
	}
	i, found := s.find(b)
	if found {
		return false
	}
	s.slots[i], s.used[i] = b, true
	s.n++
	return true
}

// Has reports whether id is in the set.
func (s *TaskSet) Has(id string) bool {
	b, ok := parseID(id)
	if !ok || len(s.slots) == 0 {
		return false
	}
	_, found := s.find(b)
	return found
}

// Len is the number of ids in the set.
func (s *TaskSet) Len() int { return s.n }

// find returns b's slot, or the free slot where it would go.
func (s *TaskSet) find(b [16]byte) (int, bool) {
	mask := uint64(len(s.slots) - 1)
	for i := binary.LittleEndian.Uint64(b[:8]) & mask; ; i = (i + 1) & mask {
		if !s.used[i] {
			return int(i), false
		}
		if s.slots[i] == b {
			return int(i), true
		}
	}
}

func (s *TaskSet) grow() {
	old, oldUsed := s.slots, s.used
	size := max(64, 2*len(old))
	s.slots, s.used = make([][16]byte, size), make([]bool, size)
	for i, b := range old {
		if oldUsed[i] {
			j, _ := s.find(b)
			s.slots[j], s.used[j] = b, true
		}
	}
}
