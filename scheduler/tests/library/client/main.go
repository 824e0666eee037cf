// library-client drives Kiln's library API with a third-party client: Apptainer's
// container-library-client as Debian packages it (golang-github-apptainer-container-library-client-dev,
// the client of Apptainer 1.0). The Rust test in ../mod.rs builds it offline and judges its output.
//
// Usage: library-client BASE_URL TOKEN COMMAND ARGS...   (TOKEN "-" means none)
//
//	push FILE ENTITY/COLLECTION/CONTAINER ARCH TAG[,TAG...]  -> "pushed CONTAINER_URL QUOTA_USAGE QUOTA_TOTAL"
//	search VALUE ARCH                                        -> one "PATH:TAGS HASH" line per image;
//	                                                            ARCH "-" sends none, and then also
//	                                                            "entity E", "collection E/C" and
//	                                                            "container E/C/N" lines
//	get ARCH ENTITY/COLLECTION/CONTAINER:TAG                 -> "HASH SIZE ARCH"
//	pull ARCH ENTITY/COLLECTION/CONTAINER TAG OUT            -> "sha256.HEX" of OUT (concurrent download)
//	pull-stream ARCH ENTITY/COLLECTION/CONTAINER TAG OUT     -> "sha256.HEX" of OUT (single stream)
//	delete ENTITY/COLLECTION/CONTAINER:TAG ARCH              -> "deleted"
//
// Failures print the client's error on stderr and exit 1; a missing object exits 2.
package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/apptainer/container-library-client/client"
)

func main() {
	if len(os.Args) < 4 {
		fmt.Fprintln(os.Stderr, "usage: library-client BASE_URL TOKEN COMMAND ARGS...")
		os.Exit(64)
	}
	token := os.Args[2]
	if token == "-" {
		token = ""
	}
	c, err := client.NewClient(&client.Config{BaseURL: os.Args[1], AuthToken: token})
	if err != nil {
		fail(err)
	}
	if err := run(context.Background(), c, os.Args[3], os.Args[4:]); err != nil {
		fail(err)
	}
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, err)
	if errors.Is(err, client.ErrNotFound) {
		os.Exit(2)
	}
	os.Exit(1)
}

func run(ctx context.Context, c *client.Client, command string, args []string) error {
	switch {
	case command == "push" && len(args) == 4:
		f, err := os.Open(args[0])
		if err != nil {
			return err
		}
		defer f.Close()
		done, err := c.UploadImage(ctx, f, args[1], args[2], strings.Split(args[3], ","), "pushed by the interop test", nil)
		if err != nil {
			return err
		}
		if done == nil {
			fmt.Println("pushed - -")
			return nil
		}
		fmt.Printf("pushed %s %d %d\n", done.ContainerURL, done.Quota.QuotaUsageBytes, done.Quota.QuotaTotalBytes)
	case command == "search" && len(args) == 2:
		query := map[string]string{"value": args[0], "arch": args[1]}
		if args[1] == "-" {
			delete(query, "arch")
		}
		results, err := c.Search(ctx, query)
		if err != nil {
			return err
		}
		for _, entity := range results.Entities {
			fmt.Printf("entity %s\n", entity.Name)
		}
		for _, collection := range results.Collections {
			fmt.Printf("collection %s/%s\n", collection.EntityName, collection.Name)
		}
		for _, container := range results.Containers {
			fmt.Printf("container %s/%s/%s\n", container.EntityName, container.CollectionName, container.Name)
		}
		for _, image := range results.Images {
			fmt.Printf("%s/%s/%s:%s %s\n", image.EntityName, image.CollectionName, image.ContainerName, strings.Join(image.Tags, ","), image.Hash)
		}
	case command == "get" && len(args) == 2:
		image, err := c.GetImage(ctx, args[0], args[1])
		if err != nil {
			return err
		}
		arch := "-"
		if image.Architecture != nil {
			arch = *image.Architecture
		}
		fmt.Printf("%s %d %s\n", image.Hash, image.Size, arch)
	case (command == "pull" || command == "pull-stream") && len(args) == 4:
		out, err := os.Create(args[3])
		if err != nil {
			return err
		}
		defer out.Close()
		if command == "pull" {
			spec := &client.Downloader{Concurrency: 4, PartSize: 1024 * 1024, BufferSize: 32 * 1024}
			err = c.ConcurrentDownloadImage(ctx, out, args[0], args[1], args[2], spec, nil)
		} else {
			err = c.DownloadImage(ctx, out, args[0], args[1], args[2], nil)
		}
		if err != nil {
			return err
		}
		if _, err := out.Seek(0, io.SeekStart); err != nil {
			return err
		}
		hash := sha256.New()
		if _, err := io.Copy(hash, out); err != nil {
			return err
		}
		fmt.Printf("sha256.%s\n", hex.EncodeToString(hash.Sum(nil)))
	case command == "delete" && len(args) == 2:
		if err := c.DeleteImage(ctx, args[0], args[1]); err != nil {
			return err
		}
		fmt.Println("deleted")
	default:
		return fmt.Errorf("unknown command or wrong arguments: %s %v", command, args)
	}
	return nil
}
