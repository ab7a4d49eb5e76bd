package dcclip.core;

/** A bundle (manifest, tokenizer, class embeddings, a file) is missing, malformed, or does not match. */
public class BundleException extends RuntimeException {
    private static final long serialVersionUID = 1L;

    public BundleException(String message) {
        super(message);
    }

    public BundleException(String message, Throwable cause) {
        super(message, cause);
    }
}
