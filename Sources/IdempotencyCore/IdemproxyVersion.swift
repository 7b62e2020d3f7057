/// The version every executable of the package prints for `--version`.
public enum IdemproxyVersion {
    public static let current = "0.7.0"
}
