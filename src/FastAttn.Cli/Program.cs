return FastAttn.Cli.CliApp.Run(args, Console.Out, Console.Error);
