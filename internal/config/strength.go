package config

import (
	"math"
	"strings"
	"unicode/utf8"
)

// minSecretBits is the estimated strength production requires of a signing secret or API
// key: 32 random hexadecimal characters score about 115 bits, 32 × "a" scores 0.
const minSecretBits = 96

// secretBits estimates the information in s: its length times the Shannon entropy of its
// characters, or of the steps between neighbouring characters when that is lower, so that
// repetitions ("aaaa", "abab") and runs ("0123456789") score low while random strings score
// close to length × log2(alphabet). It is a screen for careless values, not a proof of strength.
func secretBits(s string) float64 {
	runes := []rune(s)
	if len(runes) < 2 {
		return 0
	}
	chars := make(map[rune]int, len(runes))
	steps := make(map[rune]int, len(runes))
	for i, r := range runes {
		chars[r]++
		if i > 0 {
			steps[r-runes[i-1]]++
		}
	}
	perChar := min(shannon(chars, len(runes)), shannon(steps, len(runes)-1))
	return perChar * float64(len(runes))
}

func shannon(counts map[rune]int, n int) float64 {
	h := 0.0
	for _, c := range counts {
		p := float64(c) / float64(n)
		h -= p * math.Log2(p)
	}
	return h
}

// commonPasswords are fragments no production password may contain.
var commonPasswords = []string{
	"password", "passw0rd", "admin", "dispatch", "qwerty", "letmein", "welcome", "changeme",
	"secret", "123456", "654321", "iloveyou", "monkey", "dragon", "asynq", "default",
}

// weakPassword returns why pw is too weak for a production login (the queue UI's), or "".
func weakPassword(pw, user string) string {
	lower := strings.ToLower(pw)
	switch {
	case utf8.RuneCountInString(pw) < 12:
		return "must be at least 12 characters in production"
	case user != "" && strings.Contains(lower, strings.ToLower(user)):
		return "must not contain the user name"
	case secretBits(pw) < 40:
		return "is too predictable (repeated or sequential characters)"
	}
	for _, c := range commonPasswords {
		if strings.Contains(lower, c) {
			return "must not contain a common password (" + c + ")"
		}
	}
	return ""
}
