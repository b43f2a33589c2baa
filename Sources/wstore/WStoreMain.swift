import WStoreCLI

/// The `wstore` executable; all command logic lives in WStoreCLI.
@main
enum WStoreMain {
    static func main() async {
        await WStoreCommand.main()
    }
}
