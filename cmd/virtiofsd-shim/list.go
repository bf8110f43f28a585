package main

import (
	"context"
	"errors"
	"io"
)

func listCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	return errors.New("list: not implemented yet")
}
