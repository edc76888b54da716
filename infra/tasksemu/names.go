package tasksemu

import (
	"strings"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Resource-name rules of the real service (from the cloudtaskspb field documentation):
// PROJECT_ID: letters, digits, hyphens, colons, periods; LOCATION_ID: the canonical id
// (lower-case letters, digits, hyphens); QUEUE_ID: letters, digits, hyphens, at most 100;
// TASK_ID: letters, digits, hyphens, underscores, at most 500.
const (
	maxQueueIDLen = 100
	maxTaskIDLen  = 500
)

func isProjectID(s string) bool {
	return s != "" && allChars(s, func(r rune) bool { return isAlnum(r) || r == '-' || r == ':' || r == '.' })
}

func isLocationID(s string) bool {
	return s != "" && allChars(s, func(r rune) bool { return isAlnum(r) || r == '-' })
}

func isQueueID(s string) bool {
	return s != "" && len(s) <= maxQueueIDLen && allChars(s, func(r rune) bool { return isAlnum(r) || r == '-' })
}

// IsValidTaskID reports whether id is a task id the real service accepts:
// 1 to 500 characters from [A-Za-z0-9_-].
func IsValidTaskID(id string) bool {
	return id != "" && len(id) <= maxTaskIDLen && allChars(id, func(r rune) bool { return isAlnum(r) || r == '-' || r == '_' })
}

func isAlnum(r rune) bool {
	return r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9'
}

func allChars(s string, ok func(rune) bool) bool {
	for _, r := range s {
		if !ok(r) {
			return false
		}
	}
	return true
}

// parseLocation checks "projects/P/locations/L".
func parseLocation(name string) error {
	p := strings.Split(name, "/")
	if len(p) != 4 || p[0] != "projects" || p[2] != "locations" || !isProjectID(p[1]) || !isLocationID(p[3]) {
		return status.Errorf(codes.InvalidArgument,
			"Invalid resource field value in the request: parent %q must be formatted: \"projects/<PROJECT_ID>/locations/<LOCATION_ID>\"", name)
	}
	return nil
}

// parseQueueName checks "projects/P/locations/L/queues/Q" and returns the location part.
func parseQueueName(name string) (location string, err error) {
	p := strings.Split(name, "/")
	if len(p) != 6 || p[0] != "projects" || p[2] != "locations" || p[4] != "queues" ||
		!isProjectID(p[1]) || !isLocationID(p[3]) || !isQueueID(p[5]) {
		return "", status.Errorf(codes.InvalidArgument,
			"Queue name must be formatted: \"projects/<PROJECT_ID>/locations/<LOCATION_ID>/queues/<QUEUE_ID>\" where QUEUE_ID is 1-%d characters from [A-Za-z0-9-]; got %q", maxQueueIDLen, name)
	}
	return strings.Join(p[:4], "/"), nil
}

// parseTaskName checks "projects/P/locations/L/queues/Q/tasks/ID" and returns the queue part.
func parseTaskName(name string) (queue string, err error) {
	i := strings.LastIndex(name, "/tasks/")
	bad := status.Errorf(codes.InvalidArgument,
		"Task name must be formatted: \"projects/<PROJECT_ID>/locations/<LOCATION_ID>/queues/<QUEUE_ID>/tasks/<TASK_ID>\" where TASK_ID is 1-%d characters from [A-Za-z0-9_-]; got %q", maxTaskIDLen, truncate(name, 600))
	if i < 0 {
		return "", bad
	}
	queue, id := name[:i], name[i+len("/tasks/"):]
	if _, err := parseQueueName(queue); err != nil || !IsValidTaskID(id) {
		return "", bad
	}
	return queue, nil
}

func lastSegment(name string) string {
	return name[strings.LastIndex(name, "/")+1:]
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}
