package docstest

import (
	"regexp"
	"strconv"
	"strings"
	"unicode"
)

// Link is one link of a Markdown file: its target as written and its line.
type Link struct {
	Target string
	Line   int
}

// External says whether the link leaves the repository (a URL or a mail
// address), which the tests do not follow.
func (l Link) External() bool {
	return strings.Contains(l.Target, "://") || strings.HasPrefix(l.Target, "mailto:")
}

var (
	// inlineLink is [text](target) or ![alt](target), with an optional title.
	inlineLink = regexp.MustCompile(`\]\(\s*<?([^()\s>]*)>?(?:\s+"[^"]*")?\s*\)`)
	// refDefinition is a reference-style definition: [name]: target.
	refDefinition = regexp.MustCompile(`^\s{0,3}\[[^\]]+\]:\s*<?([^\s>]+)>?`)
	// codeSpan is inline code, where brackets are not links.
	codeSpan = regexp.MustCompile("`+[^`]*`+")
	// heading is an ATX heading.
	heading = regexp.MustCompile(`^\s{0,3}#{1,6}\s+(.*?)\s*#*\s*$`)
	// htmlAnchor is an explicit anchor: <a name="x"> or id="x".
	htmlAnchor = regexp.MustCompile(`<a\s+(?:name|id)="([^"]+)"`)
)

// lines calls f for each line of text outside fenced code blocks, with its
// number.
func lines(text string, f func(n int, line string)) {
	fence := ""
	for i, line := range strings.Split(text, "\n") {
		trimmed := strings.TrimLeft(line, " ")
		if fence != "" {
			if strings.HasPrefix(trimmed, fence) {
				fence = ""
			}
			continue
		}
		if strings.HasPrefix(trimmed, "```") || strings.HasPrefix(trimmed, "~~~") {
			fence = trimmed[:3]
			continue
		}
		f(i+1, line)
	}
}

// Links returns the links of a Markdown text, outside code blocks and code
// spans.
func Links(text string) []Link {
	var links []Link
	lines(text, func(n int, line string) {
		line = codeSpan.ReplaceAllString(line, "")
		for _, m := range inlineLink.FindAllStringSubmatch(line, -1) {
			links = append(links, Link{Target: m[1], Line: n})
		}
		if m := refDefinition.FindStringSubmatch(line); m != nil {
			links = append(links, Link{Target: m[1], Line: n})
		}
	})
	return links
}

// Anchors returns the fragment each heading of a Markdown text gets on
// GitHub, and explicit HTML anchors.
func Anchors(text string) map[string]bool {
	anchors := map[string]bool{}
	seen := map[string]int{}
	lines(text, func(_ int, line string) {
		for _, m := range htmlAnchor.FindAllStringSubmatch(line, -1) {
			anchors[m[1]] = true
		}
		m := heading.FindStringSubmatch(line)
		if m == nil {
			return
		}
		slug := Slug(m[1])
		if k := seen[slug]; k > 0 {
			anchors[slug+"-"+strconv.Itoa(k)] = true
		} else {
			anchors[slug] = true
		}
		seen[slug]++
	})
	return anchors
}

// markup is the inline markup GitHub renders away before it makes a
// heading's anchor: links keep their text, images and tags go.
var markup = regexp.MustCompile(`!?\[([^\]]*)\]\([^)]*\)|<[^>]+>`)

// Slug is GitHub's anchor for a heading's text: the rendered text in lower
// case, each space a hyphen, and every character other than a letter, a
// digit, a hyphen or an underscore dropped.
func Slug(text string) string {
	text = markup.ReplaceAllStringFunc(text, func(s string) string {
		if m := markup.FindStringSubmatch(s); strings.HasPrefix(s, "[") {
			return m[1]
		}
		return ""
	})
	var b strings.Builder
	for _, r := range strings.ToLower(text) {
		switch {
		case r == ' ':
			b.WriteRune('-')
		case r == '-' || r == '_' || unicode.IsLetter(r) || unicode.IsDigit(r):
			b.WriteRune(r)
		}
	}
	return b.String()
}
